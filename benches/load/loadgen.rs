//! A fixed-rate HTTP/1.1 load generator for the load benchmark (wrk measures the
//! maximum; this measures latency at a rate every target sustains).
//!
//! Each of `--connections` keep-alive connections sends on its own schedule
//! (together `--rate` requests per second). A request that starts late because
//! the previous answer came after it was due is timed from when it was due, so
//! queueing shows in the percentiles (no coordinated omission); the lateness of
//! the timer itself (tokio's resolution is a millisecond) is not counted.
//!
//! `cargo run --release --example loadgen -- URL RATE CONNECTIONS SECONDS`
//! prints `requests= errors= rps= p50_us= p99_us= p999_us= max_us=`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, rate, connections, seconds] = args.as_slice() else {
        eprintln!("usage: loadgen URL RATE CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let (Ok(uri), Ok(rate), Ok(connections), Ok(seconds)) = (
        url.parse::<Uri>(),
        rate.parse::<f64>(),
        connections.parse::<u32>(),
        seconds.parse::<f64>(),
    ) else {
        eprintln!("loadgen: invalid arguments");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(1);
        }
    };
    let tally = runtime.block_on(run(
        uri,
        rate,
        connections,
        Duration::from_secs_f64(seconds),
    ));
    report(tally, seconds);
}

async fn run(uri: Uri, rate: f64, connections: u32, duration: Duration) -> Tally {
    let interval = Duration::from_secs_f64(f64::from(connections) / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            // Spread the connections' schedules over one interval.
            let offset = interval.mul_f64(f64::from(i) / f64::from(connections));
            tokio::spawn(connection(uri.clone(), start + offset, interval, end))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            tally.latencies_us.extend(t.latencies_us);
            tally.errors += t.errors;
        }
    }
    tally
}

async fn connection(uri: Uri, first: Instant, interval: Duration, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let mut sender = None;
    let mut due = first;
    let mut previous_done = first;
    while due < end {
        tokio::time::sleep_until(due).await;
        let started = if previous_done > due {
            due
        } else {
            Instant::now()
        };
        due += interval;
        if sender.is_none() {
            sender = connect(&authority).await;
        }
        let Some(s) = sender.as_mut() else {
            tally.errors += 1;
            continue;
        };
        let request = Request::get(uri.path())
            .header(http::header::HOST, &authority)
            .body(Empty::<Bytes>::new());
        let Ok(request) = request else {
            tally.errors += 1;
            continue;
        };
        let ok = match s.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                response.into_body().collect().await.is_ok() && status.is_success()
            }
            Err(_) => false,
        };
        previous_done = Instant::now();
        if ok {
            let micros = (previous_done - started).as_micros();
            tally
                .latencies_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        } else {
            tally.errors += 1;
            sender = None;
        }
    }
    tally
}

async fn connect(authority: &str) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(authority).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

fn report(mut tally: Tally, seconds: f64) {
    tally.latencies_us.sort_unstable();
    let n = tally.latencies_us.len();
    let at = |q: f64| {
        let index = ((n as f64 * q).ceil() as usize).clamp(1, n.max(1)) - 1;
        tally.latencies_us.get(index).copied().unwrap_or(0)
    };
    println!(
        "requests={} errors={} rps={:.0} p50_us={} p99_us={} p999_us={} max_us={}",
        n,
        tally.errors,
        n as f64 / seconds,
        at(0.5),
        at(0.99),
        at(0.999),
        tally.latencies_us.last().copied().unwrap_or(0)
    );
}
