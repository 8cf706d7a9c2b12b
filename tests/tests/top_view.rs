//! `sluice top` in a real pseudo-terminal (120x40, xterm-256color) against a real host
//! while events flow: the screen, read back through its escape codes, shows every stage
//! with a live rate; `s` moves the sort indicator; `t` opens a tap pane and Esc closes
//! it; `q` quits with status 0 and the terminal restored. A missing token (401) or a
//! wrong one (403) is a line on the screen, polled again, not a crash.

mod harness;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::*;
use portable_pty::{CommandBuilder, PtySize};

const TOKEN: &str = "top-admin-token";
/// The terminal's size.
const ROWS: u16 = 40;
const COLS: u16 = 120;
const WAIT: Duration = Duration::from_secs(20);
/// Leaving the alternate screen: the terminal is given back.
const LEAVE_ALTERNATE_SCREEN: &[u8] = b"\x1b[?1049l";

/// `sluice top` in a pseudo-terminal, its output kept raw and as a screen.
struct Top {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    keys: Box<dyn Write + Send>,
    output: Arc<Mutex<(vt100::Parser, Vec<u8>)>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Top {
    fn start(url: &str, token_file: Option<&std::path::Path>) -> Top {
        let pty = portable_pty::native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(sluice_binary());
        command.args(["top", url]);
        if let Some(token_file) = token_file {
            command.arg("--token-file");
            command.arg(token_file);
        }
        command.env("TERM", "xterm-256color");
        let child = pty.slave.spawn_command(command).unwrap();
        // Only the child holds the terminal's other end: its exit ends the output.
        drop(pty.slave);
        let mut from_terminal = pty.master.try_clone_reader().unwrap();
        let keys = pty.master.take_writer().unwrap();
        let screen = vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 0);
        let output = Arc::new(Mutex::new((screen, Vec::new())));
        let written = output.clone();
        let reader = std::thread::spawn(move || {
            // The master stays open here until the child's output has been read.
            let _master = pty.master;
            let mut buffer = [0; 8192];
            while let Ok(n @ 1..) = from_terminal.read(&mut buffer) {
                let mut output = written.lock().unwrap();
                output.0.process(&buffer[..n]);
                output.1.extend_from_slice(&buffer[..n]);
            }
        });
        Top {
            child,
            keys,
            output,
            reader: Some(reader),
        }
    }

    fn screen(&self) -> String {
        self.output.lock().unwrap().0.screen().contents()
    }

    /// Wait until the screen satisfies `check`; the screen then.
    fn wait_for(&mut self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sluice top exited with {status:?} before {what}:\n{screen}");
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn press(&mut self, key: &[u8]) {
        self.keys.write_all(key).unwrap();
        self.keys.flush().unwrap();
    }

    /// Wait for the exit; its status and everything written to the terminal.
    fn exit(mut self) -> (portable_pty::ExitStatus, Vec<u8>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "sluice top did not quit");
            std::thread::sleep(Duration::from_millis(50));
        };
        self.reader.take().unwrap().join().unwrap();
        let raw = self.output.lock().unwrap().1.clone();
        (status, raw)
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The words of the screen's row for `stage` after its name (kind, component, in/s,
/// out/s, ...).
fn stage_cells(screen: &str, stage: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|word| *word == stage)?;
        Some(words[at + 1..].iter().map(|w| w.to_string()).collect())
    })
}

/// The stages table's header row.
fn header_row(screen: &str) -> String {
    screen
        .lines()
        .find(|line| line.contains("component"))
        .unwrap_or_default()
        .to_owned()
}

/// A host whose HTTP ingest feeds `plausible` (the filter plugin) and a file sink, with
/// an admin token; events are posted to it until the returned flag is set.
fn host_with_traffic() -> (Pipeline, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let ingest = free_port();
    let host = Pipeline::start(&format!(
        r#"admin_token = "{TOKEN}"

[plugins.filter]
path = "{filter}"

[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[transforms.plausible]
type = "wasm"
plugin = "filter"
inputs = ["ingest"]
config = {{ when = {{ field = "temperature", gt = -40.0 }} }}

[sinks.stored]
type = "file"
inputs = ["plausible"]
path = "stored"
"#,
        filter = plugin("filter")
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let poster = std::thread::spawn(move || {
        let mut seq = 0;
        while !stopped.load(Ordering::Relaxed) {
            let body: Vec<String> = (0..20)
                .map(|_| {
                    seq += 1;
                    format!(
                        r#"{{"device_id":"d{}","temperature":21.5,"seq":{seq}}}"#,
                        seq % 3
                    )
                })
                .collect();
            // A refusal (the host going at the end) shows as rates of zero on the screen.
            if http_post(ingest, "/ingest", &[], body.join("\n").as_bytes()).0 != 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (host, stop, poster)
}

#[test]
fn top_shows_every_stage_with_live_rates_sorts_taps_and_restores_the_terminal() {
    let (host, stop, poster) = host_with_traffic();
    let token_file = host.dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let url = format!("http://127.0.0.1:{}", host.host.api_port);
    let mut top = Top::start(&url, Some(&token_file));

    let live = |screen: &str| {
        ["ingest", "plausible", "stored"].iter().all(|stage| {
            // in/s of a transform and a sink, out/s of the source.
            let rate = if *stage == "ingest" { 3 } else { 2 };
            stage_cells(screen, stage)
                .and_then(|cells| cells.get(rate)?.parse::<f64>().ok())
                .is_some_and(|rate| rate > 0.0)
        })
    };
    let screen = top.wait_for("every stage with a rate above zero", live);
    assert!(screen.contains(&url), "{screen}");
    assert!(screen.contains("refreshed"), "{screen}");
    assert!(!screen.contains("poll failed"), "{screen}");
    assert!(header_row(&screen).contains("name▲"), "{screen}");
    assert!(screen.contains("q quit"), "the keys: {screen}");

    top.press(b"s");
    let screen = top.wait_for("the sort on in/s", |s| header_row(s).contains("in/s▼"));
    assert!(!header_row(&screen).contains("name▲"), "{screen}");
    top.press(b"r");
    top.wait_for("the sort reversed", |s| header_row(s).contains("in/s▲"));

    // A tap on the selected stage shows its events as they pass.
    top.press(b"t");
    let screen = top.wait_for("the tap pane's events", |s| {
        s.contains("tap: ") && s.contains("\"seq\":")
    });
    assert!(
        !screen.contains("answered"),
        "the tap was not refused: {screen}"
    );
    assert!(
        screen.contains("Esc close tap"),
        "the keys say how to close it: {screen}"
    );
    top.press(b"\x1b");
    top.wait_for("the tap pane closed", |s| !s.contains("tap: "));

    top.press(b"q");
    let (status, raw) = top.exit();
    stop.store(true, Ordering::Relaxed);
    poster.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        raw.windows(LEAVE_ALTERNATE_SCREEN.len())
            .any(|bytes| bytes == LEAVE_ALTERNATE_SCREEN),
        "the alternate screen was left"
    );
}

#[test]
fn a_refused_poll_is_a_line_on_the_screen_and_polls_go_on() {
    let (host, stop, poster) = host_with_traffic();
    let url = format!("http://127.0.0.1:{}", host.host.api_port);
    let refused = |screen: &str, status: &str| {
        screen
            .lines()
            .any(|line| line.contains("poll failed") && line.contains(status))
    };

    // No token: 401.
    let mut top = Top::start(&url, None);
    let screen = top.wait_for("the 401 line", |s| refused(s, "401 Unauthorized"));
    assert!(screen.contains("refreshed not yet"), "{screen}");
    assert!(
        screen.contains("admin token is needed"),
        "the host's message: {screen}"
    );
    top.press(b"q");
    assert!(top.exit().0.success());

    // Another token: 403, polled again and again (the time on the line moves).
    let token_file = host.dir.path().join("wrong.token");
    std::fs::write(&token_file, "not-the-token").unwrap();
    let mut top = Top::start(&url, Some(&token_file));
    let screen = top.wait_for("the 403 line", |s| refused(s, "403 Forbidden"));
    let first = screen
        .lines()
        .find(|line| line.contains("poll failed"))
        .unwrap()
        .to_owned();
    top.wait_for("a later failed poll", |s| {
        s.lines()
            .any(|line| line.contains("poll failed") && line != first)
    });

    top.press(b"\x03");
    let (status, raw) = top.exit();
    stop.store(true, Ordering::Relaxed);
    poster.join().unwrap();
    assert!(status.success(), "Ctrl-C quits cleanly: {status:?}");
    assert!(
        raw.windows(LEAVE_ALTERNATE_SCREEN.len())
            .any(|bytes| bytes == LEAVE_ALTERNATE_SCREEN)
    );
}
