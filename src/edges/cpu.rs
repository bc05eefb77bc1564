//! CPU time spent by this process's threads of one name (Linux `/proc/self/task`): the demo
//! runs its hub on threads of its own and reports what they used per call.

use std::time::Duration;

/// User and system CPU time of the live threads whose name starts with `prefix` (threads
/// that have ended no longer count). `None` where `/proc` cannot be read.
pub fn threads_cpu(prefix: &str) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        total += stat_ticks(&stat).unwrap_or(0);
    }
    Some(Duration::from_secs_f64(total as f64 / ticks as f64))
}

/// utime + stime of one `stat` line: fields 14 and 15, counted after the command name, which
/// is in parentheses and may hold spaces.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_the_name() {
        let line = "4242 (kioskd hub) S 1 2 3 4 5 6 7 8 9 10 250 37 0 0 20 0 1 0 100 0 0";
        assert_eq!(stat_ticks(line), Some(287));
        assert_eq!(stat_ticks("garbage"), None);
        assert_eq!(stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_threads_time_is_counted() {
        let name = "cpu-test-spin";
        let (spent, wall) = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Spins until its own count shows 50 ms (or a generous bound on a loaded machine).
                let start = std::time::Instant::now();
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                    let spent = threads_cpu(name).unwrap_or_default();
                    if spent >= Duration::from_millis(50) || start.elapsed() > Duration::from_secs(60) {
                        return (spent, start.elapsed());
                    }
                }
            })
            .expect("thread")
            .join()
            .expect("joined");
        assert!(spent >= Duration::from_millis(50), "{spent:?} of CPU counted in {wall:?}");
        assert!(spent <= wall + Duration::from_millis(20), "more CPU ({spent:?}) than time ({wall:?})");
        assert_eq!(threads_cpu("no thread has this name"), Some(Duration::ZERO));
    }
}
