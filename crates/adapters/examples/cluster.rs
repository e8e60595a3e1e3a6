//! A cluster on 127.0.0.1: WAL channel servers and a metadata store as
//! tasks, the coordinator as a child process (this program, run with the
//! `coordinator` argument), a stream of broadcasts with conflicting keys, a
//! SIGKILL of the coordinator mid-stream and a restart that recovers from
//! its catalog; then the check that every broadcast's callback ran exactly
//! once, in order.
//!
//! ```sh
//! cargo run -p simcast-adapters --example cluster
//! ```

use std::process::ExitCode;

/// Under `--cfg madsim` or `--cfg loom` the library has no real cluster
/// (no processes, no sockets): say so rather than fail to build.
#[cfg(any(madsim, loom))]
fn main() -> ExitCode {
    eprintln!(
        "error: the cluster example runs real processes and sockets: build it without --cfg madsim or --cfg loom"
    );
    ExitCode::from(2)
}

#[cfg(not(any(madsim, loom)))]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("coordinator") {
        return simcast_adapters::cluster::coordinator_main(&args);
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this program to run the coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = simcast_adapters::cluster::ClusterConfig::default();
    match simcast_adapters::cluster::run(&cfg, program) {
        Ok(s) => {
            let v = &s.verdict;
            println!(
                "check passed: {} broadcasts from {} clients; every callback ran exactly once ({} applications in the store, {} broadcasts re-sent after the crash lost them); conflicting callbacks ran in control-tick order ({} pairs checked); {} coordinator kill(s) survived",
                v.done, cfg.clients, v.applied, v.rebroadcasts, v.ordered_pairs, s.kills
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("check FAILED: {e}");
            ExitCode::from(1)
        }
    }
}
