//! `sluice top URL`: a live view of a running host in the terminal. A thread polls
//! `GET /v1/admin/overview` (with the admin token) every interval and hands the answer,
//! or why there was none, to the screen, which keeps showing the last data and retries;
//! `t` streams the selected stage's events into a pane (`GET /v1/tap/{stage}`).
//! The terminal is given back as it was on every way out: `q`, an error or a panic.

mod model;
mod tap;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::api_client::{ApiArgs, ApiClient};
use model::Model;
use tap::TapPane;

#[derive(clap::Args)]
pub struct TopArgs {
    /// The host's API, e.g. `https://central.example:9443` (the quickstart's by default).
    #[arg(default_value = "http://127.0.0.1:9598")]
    url: String,
    /// A file holding the API's admin token (`[api] admin_token`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The CA that signed the host's certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// How often to ask the host.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    interval_ms: u64,
}

/// How long the screen waits for a key before it looks for news from the host.
const TICK: Duration = Duration::from_millis(100);

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let client = Arc::new(ApiClient::new(&ApiArgs {
        api: args.url,
        token_file: args.token_file,
        ca_file: args.ca_file,
    })?);
    let polls = poll_overview(client.clone(), Duration::from_millis(args.interval_ms));
    let mut screen = Screen {
        model: Model::new(client.base()),
        tap: None,
        client,
        polls,
    };
    // ratatui's panic hook restores the terminal before the panic is reported; the
    // guard restores it when `show` returns, with an error or not.
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let _restore = RestoreOnDrop;
    screen.show(&mut terminal)
}

struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// One poll's outcome, and when it came.
struct Polled {
    at: Instant,
    now_ms: i64,
    overview: Result<serde_json::Value, String>,
}

/// Ask the host every `interval` on a thread of its own, so that a slow or absent host
/// never holds up the keys; it stops when the screen has gone.
fn poll_overview(client: Arc<ApiClient>, interval: Duration) -> mpsc::Receiver<Polled> {
    let (sender, polls) = mpsc::channel();
    std::thread::spawn(move || {
        loop {
            let started = Instant::now();
            let overview = client
                .get("/v1/admin/overview")
                .map_err(|error| format!("{error:#}"));
            let polled = Polled {
                at: Instant::now(),
                now_ms: wall_clock_ms(),
                overview,
            };
            if sender.send(polled).is_err() {
                return;
            }
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    });
    polls
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

struct Screen {
    model: Model,
    tap: Option<TapPane>,
    client: Arc<ApiClient>,
    polls: mpsc::Receiver<Polled>,
}

impl Screen {
    /// Draw, take keys and news, until a key says quit.
    fn show(&mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
        loop {
            terminal.draw(|frame| view::draw(frame, &self.model, self.tap.as_ref()))?;
            if event::poll(TICK)?
                && let Event::Key(key) = event::read()?
                && self.quits(key)
            {
                return Ok(());
            }
            while let Ok(polled) = self.polls.try_recv() {
                match polled.overview {
                    Ok(overview) => {
                        if let Err(error) = self.model.apply(overview, polled.at, polled.now_ms) {
                            let error = format!("the overview is not as expected: {error}");
                            self.model.failed(error, polled.now_ms);
                        }
                    }
                    Err(error) => self.model.failed(error, polled.now_ms),
                }
            }
            if let Some(tap) = &mut self.tap {
                tap.drain();
            }
        }
    }

    /// Act on a key; true when it quits.
    fn quits(&mut self, key: KeyEvent) -> bool {
        if key.kind != KeyEventKind::Press {
            return false;
        }
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return true,
            KeyCode::Char('q') => return true,
            // Esc closes the tap (dropping its connection); without one it quits.
            KeyCode::Esc => return self.tap.take().is_none(),
            KeyCode::Up | KeyCode::Char('k') => self.model.select(-1),
            KeyCode::Down | KeyCode::Char('j') => self.model.select(1),
            KeyCode::Char('s') => self.model.cycle_sort(),
            KeyCode::Char('r') => self.model.reverse(),
            KeyCode::Char('t') => {
                if let Some(stage) = self.model.selected_stage() {
                    self.tap = Some(TapPane::open(&self.client, stage));
                }
            }
            _ => {}
        }
        false
    }
}
