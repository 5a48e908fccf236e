//! Issue #33: `cargo run` (the binary's features) and `cargo test` (the same plus the
//! dev-dependencies') compile every crate once. Cargo builds a crate once per feature set, so a
//! dev-dependency that turns on one more feature of a crate deep inside Burn's tree
//! (criterion's `ciborium/default`, png's `miniz_oxide/simd`) makes the test build compile all
//! of Burn, cubecl and wgpu a second time. The root package asks for those features itself
//! (`Cargo.toml`); this test fails, naming the crate, when a new dependency brings another.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each package of the workspace's dependency graph (`name version`) with the feature sets
/// it is built with, as `cargo tree` resolves them with `edges`.
fn feature_sets(edges: &str) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--workspace", "--offline", "--prefix", "none"])
        .args(["-e", edges, "-f", "{p}|{f}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        // `name vX.Y.Z (path)` → `name vX.Y.Z`
        let package: Vec<&str> = package.split_whitespace().take(2).collect();
        sets.entry(package.join(" "))
            .or_default()
            .insert(features.trim().to_owned());
    }
    sets
}

#[test]
fn the_binary_and_the_tests_share_one_build_of_every_crate() {
    let binary = feature_sets("normal,build");
    let tests = feature_sets("normal,build,dev");
    assert!(binary.keys().any(|p| p.starts_with("burn ")), "{binary:?}");
    // A feature set the binary builds must also be one the tests build: then that build is
    // shared. (A crate can be built with two sets, e.g. as a build script's dependency and as
    // a library's, which cargo keeps apart anyway.)
    let split: Vec<String> = binary
        .iter()
        .filter_map(|(package, sets)| {
            let theirs = tests.get(package)?;
            let missing: Vec<&String> = sets.difference(theirs).collect();
            (!missing.is_empty())
                .then(|| format!("{package}: binary {missing:?}, tests {theirs:?}"))
        })
        .collect();
    assert!(
        split.is_empty(),
        "built twice, once per feature set (ask for the tests' features in the root \
         Cargo.toml's [dependencies]):\n{}",
        split.join("\n")
    );
}
