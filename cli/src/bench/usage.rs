//! CPU time and memory of this process, for `kpl bench`.
//!
//! On Linux, CPU is also counted per thread name (`/proc/self/task/*/stat`), so the producer's
//! own threads can be told apart from an embedded local Kinesis running in the same process,
//! and the peak resident set is reset between runs (`/proc/self/clear_refs`). Elsewhere the
//! figures are the whole process's (`getrusage`), and the peak is the process's lifetime peak.
// getrusage and sysconf are C calls through libc: the CLI's one place that needs `unsafe`.
#![allow(unsafe_code)]

#[cfg(unix)]
fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

/// CPU seconds (user + system) used by the whole process so far; `None` off Unix.
pub fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let usage = rusage();
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Some(secs(usage.ru_utime) + secs(usage.ru_stime))
    }
    #[cfg(not(unix))]
    None
}

/// CPU seconds used so far by this process's threads whose names start with one of
/// `prefixes`; `None` where threads cannot be told apart (not Linux).
pub fn threads_cpu_seconds(prefixes: &[&str]) -> Option<f64> {
    #[cfg(not(target_os = "linux"))]
    {
        let _ = prefixes;
        None
    }
    #[cfg(target_os = "linux")]
    linux_threads_cpu_seconds(prefixes)
}

#[cfg(target_os = "linux")]
fn linux_threads_cpu_seconds(prefixes: &[&str]) -> Option<f64> {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // "tid (name) state ppid ...": the name may hold spaces and parentheses, so split at
        // the last ')'; utime and stime are the 14th and 15th fields.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += field(11) + field(12);
    }
    Some(total as f64 / ticks)
}

/// Resets the peak resident set size, so the next [`peak_rss_bytes`] covers only what follows.
/// Returns whether it could (Linux only).
pub fn reset_peak_rss() -> bool {
    cfg!(target_os = "linux") && std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak resident set size in bytes: since the last successful [`reset_peak_rss`] on Linux,
/// since the process started elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    if cfg!(target_os = "linux") {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        return Some(kib * 1024);
    }
    #[cfg(unix)]
    {
        // Bytes on macOS, KiB on the other Unixes.
        let scale = if cfg!(target_os = "macos") { 1 } else { 1024 };
        Some(rusage().ru_maxrss as u64 * scale)
    }
    #[cfg(not(unix))]
    None
}
