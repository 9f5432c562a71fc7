//! What the load clients (bench/rooms_load.rs, bench/ws_load.rs, bench/cross_node.rs, ...)
//! share: CPU time of the measured processes, and latency percentiles.

/// User+system CPU time, in microseconds, used so far by process `pid` (all its threads),
/// from /proc/PID/stat; 0 when it cannot be read.
pub fn cpu_micros(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): state is the first, utime the
    // 12th, stime the 13th; they count clock ticks of 1/100 s (Linux's USER_HZ).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10_000.0
}

/// CPU time of the processes named by the environment variables BENCH_SERVER_PID and
/// BENCH_REDIS_PID (each 0 when unset).
pub fn server_cpu() -> [f64; 2] {
    ["BENCH_SERVER_PID", "BENCH_REDIS_PID"]
        .map(|var| std::env::var(var).map_or(0.0, |pid| cpu_micros(&pid)))
}

/// The `q` quantile (0 to 1) of sorted latencies in microseconds, in milliseconds.
pub fn percentile_ms(sorted_micros: &[u32], q: f64) -> f64 {
    sorted_micros
        .get(((sorted_micros.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}
