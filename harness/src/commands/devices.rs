//! `socbench devices`: the local host and every device of every configured adb server.

use crate::cli::DevicesArgs;
use anyhow::Result;
use serde_json::{Value, json};
use socbench_devices::adb::{self, AdbEntry};
use socbench_devices::{AdbDevice, Device, DeviceInfo, LocalHost};

/// One row: a device with its state and, when it answers, its info.
fn row(
    serial: &str,
    state: &str,
    server: Option<String>,
    info: Result<DeviceInfo, String>,
) -> Value {
    match info {
        Ok(info) => json!({"serial": serial, "state": state, "server": server, "info": info}),
        Err(e) => json!({"serial": serial, "state": state, "server": server, "error": e}),
    }
}

/// Runs the command.
pub fn run(args: &DevicesArgs) -> Result<()> {
    let mut rows = vec![row(
        "local",
        "device",
        None,
        LocalHost.info().map_err(|e| e.to_string()),
    )];
    let mut server_errors = Vec::new();
    for server in args.servers.servers() {
        match adb::list_devices(server) {
            Ok(entries) => {
                for AdbEntry { serial, state, .. } in entries {
                    let info = if state == "device" {
                        AdbDevice::new(&serial, server)
                            .info()
                            .map_err(|e| e.to_string())
                    } else {
                        Err(format!("not usable while {state}"))
                    };
                    rows.push(row(&serial, &state, Some(server.to_string()), info));
                }
            }
            Err(e) => {
                server_errors.push(json!({"server": server.to_string(), "error": e.to_string()}))
            }
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"devices": rows, "server_errors": server_errors})
        );
        return Ok(());
    }
    println!(
        "{:<22} {:<12} {:<24} {:<11} {:>5} {:>9}  SENSORS / CLUSTERS",
        "SERIAL", "STATE", "MODEL", "ABI", "CPUS", "RAM"
    );
    for r in &rows {
        let info = &r["info"];
        let clusters: Vec<String> = info["clusters"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let n = c["cpus"].as_array().map_or(0, Vec::len);
                        match c["max_khz"].as_u64() {
                            Some(k) => format!(
                                "{}×{} {:.2} GHz",
                                n,
                                c["name"].as_str().unwrap_or("?"),
                                k as f64 / 1e6
                            ),
                            None => format!("{}×{}", n, c["name"].as_str().unwrap_or("?")),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let detail = match r.get("error") {
            Some(e) => e.as_str().unwrap_or("").to_owned(),
            None => format!(
                "{} / {}",
                info["sensors"].as_str().unwrap_or("?"),
                clusters.join(", ")
            ),
        };
        println!(
            "{:<22} {:<12} {:<24} {:<11} {:>5} {:>9}  {}",
            r["serial"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            info["model"]
                .as_str()
                .unwrap_or("-")
                .chars()
                .take(24)
                .collect::<String>(),
            info["abi"].as_str().unwrap_or("-"),
            info["cpu_count"]
                .as_u64()
                .map_or("-".into(), |n| n.to_string()),
            info["total_ram_bytes"]
                .as_u64()
                .map_or("-".into(), |b| format!(
                    "{:.1} GiB",
                    b as f64 / (1u64 << 30) as f64
                )),
            detail
        );
    }
    for e in &server_errors {
        eprintln!("warning: {}", e["error"].as_str().unwrap_or(""));
    }
    Ok(())
}
