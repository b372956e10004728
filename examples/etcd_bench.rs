//! Timings of the etcd lock backend (locksup::testing::etcd), driven by
//! bench/etcd.py against an etcd it starts: one JSON line per measure.
//!
//! `etcd_bench ENDPOINTS N`:
//! * `acquire_release`: acquire + release of an uncontended lock on an open
//!   connection;
//! * `connect_acquire_release`: the same with a new connection each time
//!   (what one locksup process does);
//! * `handoff`: from the holder's release to the next waiter holding.

use std::time::{Duration, Instant};

use locksup::testing::etcd::{Acquired, Config, Etcd, Queued, Wait, parse_endpoints};

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    if n == 0 {
        return;
    }
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "measure": name,
            "n": n,
            "mean_ms": mean,
            "median_ms": ms(samples[n / 2]),
            "p95_ms": ms(samples[(n * 95 / 100).min(n - 1)]),
            "min_ms": ms(samples[0]),
        })
    );
}

async fn run(cfg: Config, n: usize) -> Result<(), String> {
    let etcd = Etcd::connect(&cfg)
        .await
        .map_err(|e| e.message().to_owned())?;
    let timing = etcd
        .timing(Some(Duration::from_secs(1)))
        .map_err(|e| e.message().to_owned())?;
    let meta = r#"{"host":"bench"}"#;
    let mut samples = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        match etcd
            .acquire("bench/uncontended", meta, timing, Wait::No)
            .await
        {
            Ok(Acquired::Held(h)) => {
                h.release().await;
            }
            Ok(_) => return Err("busy".into()),
            Err(e) => return Err(e.message().to_owned()),
        }
        samples.push(t.elapsed());
    }
    report("acquire_release", samples);

    let mut samples = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let fresh = Etcd::connect(&cfg)
            .await
            .map_err(|e| e.message().to_owned())?;
        match fresh
            .acquire("bench/uncontended", meta, timing, Wait::No)
            .await
        {
            Ok(Acquired::Held(h)) => {
                h.release().await;
            }
            Ok(_) => return Err("busy".into()),
            Err(e) => return Err(e.message().to_owned()),
        }
        samples.push(t.elapsed());
    }
    report("connect_acquire_release", samples);

    let other = Etcd::connect(&cfg)
        .await
        .map_err(|e| e.message().to_owned())?;
    let mut samples = Vec::new();
    for _ in 0..n {
        let held = match etcd.acquire("bench/handoff", meta, timing, Wait::No).await {
            Ok(Acquired::Held(h)) => h,
            Ok(_) => return Err("busy".into()),
            Err(e) => return Err(e.message().to_owned()),
        };
        let mut waiter = match other.enqueue("bench/handoff", meta, timing).await {
            Ok(Queued::Waiting(w)) => w,
            Ok(Queued::Held(_)) => return Err("not queued".into()),
            Err(e) => return Err(e.message().to_owned()),
        };
        let next = tokio::spawn(async move {
            let r = waiter.wait(None).await;
            (Instant::now(), r)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        held.release().await;
        let (got, r) = next.await.map_err(|e| e.to_string())?;
        match r {
            Ok(Some(h)) => {
                samples.push(got - t);
                h.release().await;
            }
            Ok(None) => return Err("wait ended".into()),
            Err(e) => return Err(e.message().to_owned()),
        }
    }
    report("handoff", samples);
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoints = args.next().unwrap_or_else(|| "127.0.0.1:2379".into());
    let n = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let cfg = Config {
        endpoints: parse_endpoints(&endpoints),
        ttl: Duration::from_secs(10),
        ..Config::default()
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("etcd_bench: {e}");
            std::process::exit(125);
        }
    };
    if let Err(e) = rt.block_on(run(cfg, n)) {
        eprintln!("etcd_bench: {e}");
        std::process::exit(125);
    }
}
