//! (a)'s load generator: closed-loop and open-loop runs of `Helloworld.Call` (no coordinated
//! omission in the open loop).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use hdrhistogram::Histogram;
use tokio::sync::{Mutex, mpsc};

use crate::params::CALL_TIMEOUT;

mod client;

use client::Client;
pub use client::Target;

/// Outcome of a closed-loop run.
pub struct ClosedLoop {
    pub rate: f64,
    pub ok: u64,
    pub errors: u64,
}

/// Every connection sends its next call as soon as the previous one answered; calls completed in
/// the measured window count.
pub async fn closed_loop(target: &Target, conns: usize, warmup: Duration, measure: Duration) -> Result<ClosedLoop> {
    let clients = Client::workers(target, conns).await?;
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let target = *target;
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, 0u64);
                while Instant::now() < until {
                    let r = tokio::time::timeout(CALL_TIMEOUT, client.call()).await;
                    let done = Instant::now();
                    let counted = done >= from && done < until;
                    if matches!(r, Ok(Ok(()))) {
                        ok += u64::from(counted);
                    } else {
                        errors += u64::from(counted);
                        client = Client::connect(&target).await?;
                    }
                }
                Ok::<_, anyhow::Error>((ok, errors))
            })
        })
        .collect();
    let (mut ok, mut errors) = (0, 0);
    for w in workers {
        let (o, e) = w.await??;
        ok += o;
        errors += e;
    }
    Ok(ClosedLoop {
        rate: ok as f64 / measure.as_secs_f64(),
        ok,
        errors,
    })
}

/// Outcome of an open-loop run.
pub struct OpenLoop {
    /// Latency from the scheduled send time, µs, of the calls scheduled in the measured window.
    pub hist: Histogram<u64>,
    /// Calls of the measured window completed per second, from its start to the last completion:
    /// below the scheduled rate when the system under load fell behind it.
    pub achieved: f64,
    pub errors: u64,
}

/// Sends at a fixed `rate`: a pacer thread releases send times `start + k/rate`; the next free
/// connection takes each one. Latency runs from the scheduled time, so queueing behind a slow call
/// is charged to the calls that waited.
pub async fn open_loop(
    target: &Target,
    conns: usize,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> Result<OpenLoop> {
    ensure!(rate >= 1.0, "open-loop rate {rate} is too low");
    let clients = Client::workers(target, conns).await?;
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + warmup;
    let total = ((warmup + measure).as_secs_f64() * rate) as u64;
    let pacer = std::thread::spawn(move || {
        for k in 0..total {
            let at = start + Duration::from_secs_f64(k as f64 / rate);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    let target = *target;
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut errors = 0u64;
                let mut last_done = from;
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(at) = next else { break };
                    let r = tokio::time::timeout(CALL_TIMEOUT, client.call()).await;
                    let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let counted = at >= from;
                    if counted {
                        last_done = Instant::now();
                    }
                    if matches!(r, Ok(Ok(()))) {
                        if counted {
                            hist.saturating_record(micros.max(1));
                        }
                    } else {
                        errors += u64::from(counted);
                        client = Client::connect(&target).await?;
                    }
                }
                Ok::<_, anyhow::Error>((hist, errors, last_done))
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    let mut last_done = from;
    for w in workers {
        let (h, e, done) = w.await??;
        hist.add(&h)?;
        errors += e;
        last_done = last_done.max(done);
    }
    pacer.join().map_err(|_| anyhow!("the pacer thread panicked"))?;
    let span = last_done.duration_since(from).max(Duration::from_millis(1));
    Ok(OpenLoop {
        achieved: hist.len() as f64 / span.as_secs_f64(),
        hist,
        errors,
    })
}
