//! The access log: one line per request, JSON by default or a text template with
//! nginx-style `$variables`, to stdout or a file (reopened on SIGUSR1 for
//! logrotate).
//!
//! The data plane never waits for it: lines go into a queue, bounded in lines and
//! in bytes (clients choose how long their paths are), that a writer thread
//! drains; when the queue is full, lines are dropped and counted
//! (`sluice_access_log_dropped_total`).
//!
//! A text template is filled in one pass, so a value that holds `$status` stays
//! text; control characters, quotes and backslashes in values are written as
//! `\xHH`, as nginx escapes them, so no client can forge or break a line.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::ACCESS_LOG_DROPPED;

const QUEUE: usize = 16 * 1024;
/// Bytes of lines waiting at most.
const QUEUE_BYTES: usize = 16 << 20;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stdout,
    File(PathBuf),
}

impl Target {
    pub fn parse(value: &str) -> Target {
        match value.trim() {
            "" | "off" | "false" => Target::Off,
            "stdout" | "-" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }
    }
}

/// One request, as logged.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    pub time: String,
    pub request_id: String,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub protocol: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub upstream: Option<String>,
    pub upstream_status: Option<u16>,
    pub upstream_duration_ms: Option<f64>,
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub retries: u32,
    pub canary: bool,
}

impl Entry {
    fn render(&self, template: Option<&str>) -> String {
        let Some(template) = template else {
            return serde_json::to_string(self).unwrap_or_default();
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let values = [
            (
                "$upstream_duration_ms",
                opt(self.upstream_duration_ms.map(|d| format!("{d:.3}"))),
            ),
            (
                "$upstream_status",
                opt(self.upstream_status.map(|s| s.to_string())),
            ),
            ("$upstream", opt(self.upstream.clone())),
            ("$request_id", self.request_id.clone()),
            ("$duration_ms", format!("{:.3}", self.duration_ms)),
            ("$bytes_out", self.bytes_out.to_string()),
            ("$bytes_in", self.bytes_in.to_string()),
            ("$namespace", self.namespace.clone()),
            ("$protocol", self.protocol.clone()),
            ("$ingress", self.ingress.clone()),
            ("$service", self.service.clone()),
            ("$retries", self.retries.to_string()),
            ("$canary", self.canary.to_string()),
            ("$client", self.client.clone()),
            ("$method", self.method.clone()),
            ("$status", self.status.to_string()),
            ("$time", self.time.clone()),
            ("$host", self.host.clone()),
            ("$path", self.path.clone()),
        ];
        let mut line = String::with_capacity(template.len() + 128);
        let mut rest = template;
        while let Some(at) = rest.find('$') {
            line.push_str(&rest[..at]);
            let after = &rest[at..];
            // The longest variable the text names: `$upstream_status`, not `$upstream`.
            let known = values
                .iter()
                .filter(|(name, _)| after.starts_with(name))
                .max_by_key(|(name, _)| name.len());
            match known {
                Some((name, value)) => {
                    escape_into(&mut line, value);
                    rest = &after[name.len()..];
                }
                None => {
                    line.push('$');
                    rest = &after[1..];
                }
            }
        }
        line.push_str(rest);
        line
    }
}

/// Appends `value`, with control characters, `"` and `\` as `\xHH`.
fn escape_into(line: &mut String, value: &str) {
    for c in value.chars() {
        if c.is_control() || c == '"' || c == '\\' {
            for byte in c.to_string().bytes() {
                line.push_str(&format!("\\x{byte:02X}"));
            }
        } else {
            line.push(c);
        }
    }
}

/// The sending side, shared by every connection.
#[derive(Debug, Clone)]
pub struct AccessLog {
    sender: Option<SyncSender<String>>,
    /// Bytes of the lines in the queue.
    queued: Arc<AtomicUsize>,
    template: Option<Arc<str>>,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    pub fn off() -> AccessLog {
        AccessLog {
            sender: None,
            queued: Arc::default(),
            template: None,
            reopen: Arc::default(),
        }
    }

    /// Starts the writer thread. `format` is `json` or a text template.
    pub fn start(target: Target, format: &str) -> std::io::Result<AccessLog> {
        if target == Target::Off {
            return Ok(AccessLog::off());
        }
        let (sender, receiver) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let mut writer = open(&target)?;
        let flag = reopen.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&receiver, &mut writer, &target, &flag, &written))?;
        let template = (format.trim() != "json").then(|| Arc::from(format));
        Ok(AccessLog {
            sender: Some(sender),
            queued,
            template,
            reopen,
        })
    }

    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Asks the writer to reopen its file (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    pub fn log(&self, entry: &Entry) {
        let Some(sender) = &self.sender else { return };
        let line = entry.render(self.template.as_deref());
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            metrics::counter!(ACCESS_LOG_DROPPED).increment(1);
            return;
        }
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                metrics::counter!(ACCESS_LOG_DROPPED).increment(1)
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn open(target: &Target) -> std::io::Result<BufWriter<Box<dyn Write + Send>>> {
    let out: Box<dyn Write + Send> = match target {
        Target::File(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        _ => Box::new(std::io::stdout()),
    };
    Ok(BufWriter::with_capacity(64 * 1024, out))
}

fn write_lines(
    receiver: &Receiver<String>,
    writer: &mut BufWriter<Box<dyn Write + Send>>,
    target: &Target,
    reopen: &AtomicBool,
    queued: &AtomicUsize,
) {
    let write = |writer: &mut BufWriter<Box<dyn Write + Send>>, line: String| {
        let _ = writeln!(writer, "{line}");
        queued.fetch_sub(line.len(), Ordering::AcqRel);
    };
    loop {
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                write(writer, line);
                // Batch what is queued; flush when the queue is empty.
                while let Ok(line) = receiver.try_recv() {
                    write(writer, line);
                }
                let _ = writer.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = writer.flush();
                return;
            }
        }
        if reopen.swap(false, Ordering::AcqRel) {
            let _ = writer.flush();
            match open(target) {
                Ok(fresh) => *writer = fresh,
                Err(error) => tracing::error!(%error, "cannot reopen the access log"),
            }
        }
    }
}

/// RFC 3339 UTC with milliseconds, without a date library.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text_formats() {
        let entry = Entry {
            method: "GET".into(),
            path: "/x".into(),
            status: 200,
            upstream_status: Some(200),
            canary: true,
            ..Entry::default()
        };
        let json: serde_json::Value = serde_json::from_str(&entry.render(None)).unwrap();
        assert_eq!(json["canary"], true);
        assert_eq!(json["status"], 200);
        let text = entry.render(Some(
            "$method $path $status $upstream_status $upstream canary=$canary",
        ));
        assert_eq!(text, "GET /x 200 200 - canary=true");
        assert_eq!(now_rfc3339().len(), 24);
    }

    /// Client-supplied values cannot add variables, lines or quotes.
    #[test]
    fn templates_fill_in_one_pass_and_escape_values() {
        let entry = Entry {
            method: "GET".into(),
            path: "/$status\"\n127.0.0.1 - forged\u{1b}[31m".into(),
            host: "a\\b".into(),
            status: 200,
            ..Entry::default()
        };
        let text = entry.render(Some("$host \"$path\" $status $nothing$"));
        assert_eq!(
            text,
            "a\\x5Cb \"/$status\\x22\\x0A127.0.0.1 - forged\\x1B[31m\" 200 $nothing$"
        );
        assert_eq!(text.lines().count(), 1);
    }

    /// Long client-chosen paths cannot make the queue hold more than
    /// `QUEUE_BYTES`, however few lines that is.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (sender, receiver) = sync_channel(QUEUE);
        let log = AccessLog {
            sender: Some(sender),
            queued: Arc::default(),
            template: Some(Arc::from("$path")),
            reopen: Arc::default(),
        };
        let entry = Entry {
            path: "x".repeat(1 << 20),
            ..Entry::default()
        };
        for _ in 0..20 {
            log.log(&entry);
        }
        assert_eq!(receiver.try_iter().count(), QUEUE_BYTES >> 20);
        assert_eq!(log.queued.load(Ordering::Acquire), QUEUE_BYTES);
    }
}
