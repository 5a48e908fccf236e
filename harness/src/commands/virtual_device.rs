//! `socbench virtual-device`: serve a virtual phone until killed.

use crate::cli::VirtualDeviceArgs;
use anyhow::{Context, Result};
use socbench_devices::virtual_device::{SimParams, VirtualConfig, VirtualDevice};

/// Runs the command.
pub fn run(args: &VirtualDeviceArgs) -> Result<()> {
    if !(args.thermal_tau.is_finite() && args.thermal_tau > 0.0) {
        anyhow::bail!("--thermal-tau must be a positive number of seconds");
    }
    let (state_dir, _temp) = match &args.state_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("socbench-virtual-")
                .tempdir()
                .context("creating a state directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let vd = VirtualDevice::start(VirtualConfig {
        port: args.port,
        name: args.name.clone(),
        abi: args.abi.clone(),
        state_dir: state_dir.clone(),
        sim: SimParams {
            tau_s: args.thermal_tau,
            usb_powered: args.usb_powered,
            ..SimParams::default()
        },
        ignore_affinity: args.ignore_affinity,
        locked: args.profile == "locked",
    })
    .with_context(|| format!("starting the virtual device on 127.0.0.1:{}", args.port))?;
    // The first stdout line is for scripts and tests: the serial to `adb connect`.
    println!("{}", vd.serial());
    eprintln!(
        "virtual device `{}` ({}) listening on {}; file system in {}\n\
         {} profile, on {} power (write `usb` or `battery` into {} to switch)\n\
         connect it with: adb connect {}   (stop with Ctrl-C)",
        args.name,
        args.abi,
        vd.serial(),
        vd.root().display(),
        args.profile,
        if args.usb_powered { "usb" } else { "battery" },
        state_dir
            .join(socbench_devices::virtual_device::sim::POWER_FILE)
            .display(),
        vd.serial()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
