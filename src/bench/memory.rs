//! The process's memory, from `/proc/self` (Linux): peak resident set size.

/// The peak resident set size of this process (`VmHWM` in
/// `/proc/self/status`), in MiB; `None` where `/proc` is unavailable.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib(&status, "VmHWM").map(|k| k as f64 / 1024.0)
}

/// Resets the peak to the current resident set size (Linux 4.0 and later:
/// `5` written to `/proc/self/clear_refs`), so that the next
/// [`peak_rss_mib`] covers only what runs in between. Returns whether it
/// did; where it cannot, the peak covers the whole process so far.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The value of a `Key:   123 kB` line of a `/proc/*/status` text.
fn kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let number = rest.trim().strip_suffix("kB")?.trim();
        number.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_kib() {
        let status =
            "Name:\tsimcast\nVmPeak:\t  20480 kB\nVmHWM:\t    3072 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(kib(status, "VmHWM"), Some(3072));
        assert_eq!(kib(status, "VmRSS"), Some(2048));
        assert_eq!(kib(status, "VmSwap"), None);
        assert_eq!(kib("VmHWM:\tlots\n", "VmHWM"), None);
    }

    #[test]
    fn this_process_has_a_peak_where_proc_exists() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
        }
    }
}
