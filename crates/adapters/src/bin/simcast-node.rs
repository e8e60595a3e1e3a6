//! Runs one node of a simcast cluster as its own process.
//!
//! ```text
//! simcast-node coordinator --dir DIR --store ADDR --channel 0=ADDR [--channel N=ADDR]... [--listen ADDR] [--seed N]
//! simcast-node catalog-writer --dir DIR --records N
//! ```
//! `coordinator` serves until its standard input closes. `catalog-writer`
//! appends N records to `DIR/catalog.log`, one durable append at a time,
//! printing `durable K` after each (the crash test kills it mid-stream).

#[cfg(not(any(madsim, loom)))]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("coordinator") => simcast_adapters::cluster::coordinator_main(&args),
        Some("catalog-writer") => simcast_adapters::cluster::catalog_writer_main(&args),
        _ => {
            eprintln!("usage: simcast-node coordinator|catalog-writer ...");
            std::process::ExitCode::from(2)
        }
    }
}

/// Under madsim the nodes run inside the simulation (`tests/madsim.rs`);
/// under loom there is no network.
#[cfg(any(madsim, loom))]
fn main() {}
