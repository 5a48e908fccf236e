//! Deployment: which agent binary a device gets, pushing it and the model, and what the
//! deployed agent says of itself (its build, its backends, its kernels' self-check) before any
//! cell runs.

use serde_json::Value;
use socbench_devices::info::abi_from_machine;
use socbench_devices::{Device, DeviceError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where agents and models live on a phone.
pub const REMOTE_DIR: &str = "/data/local/tmp/socbench";

/// How to start the agent on a device: the program and the arguments before the agent's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCmd {
    argv: Vec<String>,
}

impl AgentCmd {
    /// The agent with `args` appended.
    pub fn with(&self, args: &[&str]) -> Vec<String> {
        self.argv
            .iter()
            .cloned()
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect()
    }
}

/// Runs `agent args…` on `dev`.
pub fn run_agent(
    dev: &mut Box<dyn Device>,
    agent: &AgentCmd,
    args: &[&str],
    timeout: Duration,
) -> std::result::Result<socbench_devices::CommandOutput, DeviceError> {
    let argv = agent.with(args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    dev.run(&argv, timeout)
}

/// The agent binary for an ABI. For the host's ABI it is this very executable: `socbench`
/// carries the agent (`socbench agent …`, and it acts as the agent when started under the name
/// `socbench-agent`), so nothing needs building beside it. Other ABIs get a cross-built one:
/// `SOCBENCH_AGENT_<ABI>` if set, else the Android (NDK) build, else the static musl build found
/// in the target directory (`scripts/build-agent ABI` makes them).
pub fn agent_for_abi(abi: &str) -> std::result::Result<PathBuf, String> {
    let var = format!("SOCBENCH_AGENT_{}", abi.replace('-', "_").to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    if abi == abi_from_machine(std::env::consts::ARCH) {
        return Ok(exe);
    }
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let triples: &[&str] = match abi {
        "arm64-v8a" => &["aarch64-linux-android", "aarch64-unknown-linux-musl"],
        "x86_64" => &["x86_64-linux-android", "x86_64-unknown-linux-musl"],
        other => return Err(format!("no agent build for ABI {other}")),
    };
    // target/<profile>/socbench → target/<triple>/{release,debug}/socbench-agent
    let target_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    for triple in triples {
        for profile in ["release", "debug"] {
            let p = target_dir.join(triple).join(profile).join("socbench-agent");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "no socbench-agent for {abi}: build it with `scripts/build-agent {abi}` (static musl; \
         the Android NDK build when ANDROID_NDK_HOME is set), or point {var} at one"
    ))
}

/// The agent command for the local host: this executable's `agent` subcommand, or the given
/// binary when it is a separate agent build.
pub fn local_agent(binary: &Path) -> AgentCmd {
    let is_self = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        == binary.canonicalize().ok();
    let mut argv = vec![binary.display().to_string()];
    if is_self {
        argv.push("agent".into());
    }
    AgentCmd { argv }
}

/// Pushes the agent to [`REMOTE_DIR`] as `socbench-agent` (skipped when the device already has
/// the same file) and makes it executable.
pub fn push_agent(
    dev: &mut Box<dyn Device>,
    agent_local: &Path,
) -> std::result::Result<(AgentCmd, String), DeviceError> {
    let agent_remote = format!("{REMOTE_DIR}/socbench-agent");
    let o = dev.push(agent_local, &agent_remote)?;
    let chmod = dev.run(&["chmod", "755", &agent_remote], Duration::from_secs(30))?;
    dev.check("chmod", chmod)?;
    Ok((
        AgentCmd {
            argv: vec![agent_remote],
        },
        format!("{o:?}"),
    ))
}

/// Why an agent build cannot run `backend`, and what would.
pub fn missing_backend_reason(backend: &str, abi: &str, build: &Value) -> String {
    let triple = format!(
        "{}-{}",
        build["arch"].as_str().unwrap_or("?"),
        build["env"].as_str().unwrap_or("?")
    );
    let mut reason = format!("the {abi} agent ({triple}) was built without {backend}");
    if backend == "wgpu" && build["env"].as_str() == Some("musl") {
        reason.push_str(
            ": a static musl binary cannot load the phone's Vulkan driver; with the Android NDK \
             (ANDROID_NDK_HOME set) `scripts/build-agent arm64-v8a` builds the \
             aarch64-linux-android agent, which can",
        );
    }
    reason
}

/// Why the packed cells cannot be trusted on a device, from its `selftest` report: `None` when
/// every check passed.
pub fn kernel_check_failure(report: &Value) -> Option<String> {
    if report["ok"].as_bool() != Some(false) {
        return None;
    }
    let failed: Vec<String> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["max_error"].as_f64() > c["tolerance"].as_f64())
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or("?").to_owned();
            format!(
                "{} {} at {} rows off by {} (allowed {})",
                text("kernel"),
                text("format"),
                c["rows"],
                c["max_error"],
                c["tolerance"]
            )
        })
        .collect();
    Some(format!(
        "the device's quantized kernel disagrees with the portable reference ({}); \
         q8/q4 cells on the CPU backends would measure wrong arithmetic",
        failed.join("; ")
    ))
}

/// A warning when the agent `info` describes was built from another commit than this
/// controller (an agent left from an earlier build measures that build's kernels, while the
/// manifest names this one); `None` when they match or a side was built outside git.
pub fn agent_build_mismatch(info: &Value) -> Option<String> {
    let ours = env!("SOCBENCH_GIT_HASH");
    let theirs = match info["git_hash"].as_str() {
        _ if ours == "unknown" => return None,
        Some(h) if h == ours || h == "unknown" => return None,
        Some(h) => format!("commit {h}"),
        None => "an earlier build that does not report its commit".to_owned(),
    };
    Some(format!(
        "warning: the agent is from {theirs}, socbench commit {ours}: the results measure the \
         agent's build; rebuild both (`cargo build`, or `scripts/build-agent ABI` for a phone)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_host_abi_gets_this_executable_as_its_agent() {
        let abi = abi_from_machine(std::env::consts::ARCH);
        let p = agent_for_abi(&abi).unwrap();
        assert_eq!(p, std::env::current_exe().unwrap());
        assert_eq!(
            local_agent(&p).with(&["info"]).last().map(String::as_str),
            Some("info")
        );
        assert_eq!(local_agent(&p).with(&[])[1], "agent");
    }

    #[test]
    fn an_agent_from_another_commit_is_reported() {
        let ours = env!("SOCBENCH_GIT_HASH");
        let same = json!({"version": "0.1.0", "git_hash": ours});
        let other = json!({"version": "0.1.0", "git_hash": "0123456789ab"});
        let older = json!({"version": "0.1.0"});
        assert_eq!(agent_build_mismatch(&same), None);
        assert_eq!(agent_build_mismatch(&json!({"git_hash": "unknown"})), None);
        if ours == "unknown" {
            // Built outside git: nothing to compare against.
            assert_eq!(agent_build_mismatch(&other), None);
            return;
        }
        let note = agent_build_mismatch(&other).expect("a different commit is reported");
        assert!(
            note.contains("0123456789ab") && note.contains(ours),
            "{note}"
        );
        let note = agent_build_mismatch(&older).expect("an agent without a commit is reported");
        assert!(note.contains("does not report its commit"), "{note}");
    }

    #[test]
    fn a_failed_kernel_check_names_the_kernel_and_the_error() {
        let check = |max_error: f64| json!({"kernel": "arm-neon", "format": "q4_1", "rows": 3, "max_error": max_error, "tolerance": 1e-4});
        let passed = json!({"ok": true, "checks": [check(0.0)]});
        assert_eq!(kernel_check_failure(&passed), None);
        // An agent without the subcommand gives no report: nothing is skipped for it.
        assert_eq!(kernel_check_failure(&json!(null)), None);
        let failed = json!({"ok": false, "checks": [check(0.0), check(0.5)]});
        let reason = kernel_check_failure(&failed).expect("a failed check is reported");
        assert!(
            reason.contains("neon q4_1 at 3 rows off by 0.5"),
            "{reason}"
        );
    }

    #[test]
    fn this_hosts_kernels_pass_the_self_check() {
        let checks = socbench_kernels::qmatmul::self_check();
        assert!(checks.len() >= 6, "{checks:?}");
        let report = json!({"ok": checks.iter().all(|c| c.ok()), "checks": checks});
        assert_eq!(kernel_check_failure(&report), None, "{report}");
    }
}
