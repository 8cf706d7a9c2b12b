//! The screen of `sluice top`, drawn from the model alone (and the tap pane when one is
//! open), so that a test draws it on ratatui's `TestBackend` as the terminal would.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState, Wrap};

use super::model::{DeviceRow, Model, SortColumn, StageRow};
use super::tap::TapPane;

/// The devices table's rows at most; the stages get the rest.
const DEVICE_ROWS: u16 = 8;

pub fn draw(frame: &mut Frame, model: &Model, tap: Option<&TapPane>) {
    let devices = model.devices.as_ref();
    let [header, stages, devices_area, tap_area, footer] = Layout::vertical([
        // Two lines, and two for a failed poll's message.
        Constraint::Length(4),
        Constraint::Min(5),
        Constraint::Length(devices.map_or(0, |d| (d.len() as u16).clamp(1, DEVICE_ROWS) + 3)),
        Constraint::Percentage(if tap.is_some() { 45 } else { 0 }),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(header_lines(model), header);
    draw_stages(frame, model, stages);
    if let Some(devices) = devices {
        draw_devices(frame, devices, model.refreshed_ms, devices_area);
    }
    if let Some(tap) = tap {
        draw_tap(frame, tap, tap_area);
    }
    frame.render_widget(keys_line(model, tap.is_some()), footer);
}

fn header_lines(model: &Model) -> Paragraph<'static> {
    let refreshed = model
        .refreshed_ms
        .map_or("not yet".to_owned(), |ms| format!("{} UTC", clock(ms)));
    let totals = model.totals();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let problem = match &model.error {
        Some((at, error)) => Line::styled(
            format!("poll failed at {} UTC, retrying: {error}", clock(*at)),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        None => Line::default(),
    };
    Paragraph::new(vec![
        Line::from(vec![
            Span::styled("sluice top ", bold),
            Span::raw(model.url.clone()),
            Span::raw(format!("   refreshed {refreshed}")),
        ]),
        Line::from(format!(
            "in {}/s   out {}/s   errors {}   dead letters {}   alerts firing {}",
            rate(totals.rate_in),
            rate(totals.rate_out),
            totals.errors,
            totals.dead_lettered,
            model.alerts_firing
        )),
        problem,
    ])
    .wrap(Wrap { trim: true })
}

/// The stages' columns: label, width, and the sort column it stands for.
const STAGE_COLUMNS: [(&str, Constraint, Option<SortColumn>); 11] = [
    ("name", Constraint::Fill(2), Some(SortColumn::Name)),
    ("kind", Constraint::Length(9), None),
    ("component", Constraint::Fill(1), None),
    ("in/s", Constraint::Length(9), Some(SortColumn::RateIn)),
    ("out/s", Constraint::Length(9), Some(SortColumn::RateOut)),
    ("errors", Constraint::Length(8), Some(SortColumn::Errors)),
    ("err/s", Constraint::Length(7), None),
    ("dead", Constraint::Length(8), Some(SortColumn::DeadLetters)),
    ("dead/s", Constraint::Length(7), None),
    ("queue", Constraint::Length(7), Some(SortColumn::Queue)),
    ("call ms", Constraint::Length(8), None),
];

fn draw_stages(frame: &mut Frame, model: &Model, area: Rect) {
    let arrow = if model.ascending() { "▲" } else { "▼" };
    let header = Row::new(
        STAGE_COLUMNS
            .iter()
            .enumerate()
            .map(|(at, (label, _, sort))| {
                let label = match sort {
                    Some(column) if *column == model.sort => format!("{label}{arrow}"),
                    _ => (*label).to_owned(),
                };
                cell(label, at >= 3)
            }),
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = model.rows().into_iter().map(stage_row);
    let table = Table::new(rows, STAGE_COLUMNS.map(|(_, width, _)| width))
        .header(header)
        .block(Block::bordered().title(" stages "))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(model.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn stage_row(stage: &StageRow) -> Row<'static> {
    let style = if stage.failing {
        Style::new().fg(Color::Red)
    } else if stage.queue_depth > 0 {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    };
    let optional = |value: Option<f64>, shown: fn(f64) -> String| value.map_or("-".into(), shown);
    Row::new([
        cell(stage.name.clone(), false),
        cell(stage.kind.clone(), false),
        cell(stage.component.clone(), false),
        cell(rate(stage.rate_in), true),
        cell(rate(stage.rate_out), true),
        cell(stage.errors.to_string(), true),
        cell(optional(stage.errors_per_sec, rate), true),
        cell(stage.dead_lettered.to_string(), true),
        cell(optional(stage.dead_per_sec, rate), true),
        cell(stage.queue_depth.to_string(), true),
        cell(optional(stage.call_ms, millis), true),
    ])
    .style(style)
}

fn draw_devices(frame: &mut Frame, devices: &[DeviceRow], now_ms: Option<i64>, area: Rect) {
    let online = devices.iter().filter(|d| d.online).count();
    let header = Row::new(["device", "group", "state", "last seen", "release"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = devices.iter().map(|device| {
        let (state, colour) = match (device.online, device.last_contact_ms) {
            (true, _) => ("online", Color::Green),
            (false, Some(_)) => ("offline", Color::Red),
            (false, None) => ("never seen", Color::DarkGray),
        };
        let seen = match (device.last_contact_ms, now_ms) {
            (Some(at), Some(now)) => format!("{} ago", span_ms(now - at)),
            _ => "-".into(),
        };
        let release = match (&device.applied, &device.offered) {
            (applied, Some(offered)) if applied.as_ref() != Some(offered) => {
                format!("{} (offered {offered})", applied.as_deref().unwrap_or("-"))
            }
            (applied, _) => applied.clone().unwrap_or("-".into()),
        };
        Row::new([
            Cell::from(device.id.clone()),
            Cell::from(device.group.clone()),
            Cell::from(state).style(Style::new().fg(colour)),
            Cell::from(seen),
            Cell::from(release),
        ])
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(11),
        Constraint::Length(12),
        Constraint::Fill(2),
    ];
    let title = format!(" devices: {online} of {} online ", devices.len());
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn draw_tap(frame: &mut Frame, tap: &TapPane, area: Rect) {
    let count = |n: Option<u64>| n.map_or("-".into(), |n| n.to_string());
    let title = format!(
        " tap: {}   sent {}   dropped {} ",
        tap.stage,
        count(tap.sent),
        count(tap.dropped)
    );
    let block = Block::bordered().title(title);
    // Newest at the bottom: the lines that fit, counted from the end.
    let fits = block.inner(area).height as usize;
    let error_lines = usize::from(tap.error.is_some());
    let shown = tap.events.iter().skip(
        tap.events
            .len()
            .saturating_sub(fits.saturating_sub(error_lines)),
    );
    let mut lines: Vec<Line> = shown
        .map(|event| {
            let mut spans = vec![Span::styled(
                event.timestamp_ms.map_or("-".repeat(12), clock_millis),
                Style::new().fg(Color::DarkGray),
            )];
            if let Some(key) = &event.key {
                spans.push(Span::styled(
                    format!(" {key}"),
                    Style::new().fg(Color::Cyan),
                ));
            }
            if let Some(route) = &event.route {
                spans.push(Span::styled(
                    format!(" →{route}"),
                    Style::new().fg(Color::Magenta),
                ));
            }
            spans.push(Span::raw(format!(" {}", event.payload)));
            Line::from(spans)
        })
        .collect();
    if tap.events.is_empty() && tap.error.is_none() {
        lines.push(Line::styled(
            "waiting for events…",
            Style::new().fg(Color::DarkGray),
        ));
    }
    if let Some(error) = &tap.error {
        lines.push(Line::styled(error.clone(), Style::new().fg(Color::Red)));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn keys_line(model: &Model, tapping: bool) -> Paragraph<'static> {
    let esc = if tapping { "Esc close tap" } else { "Esc quit" };
    let arrow = if model.ascending() { "▲" } else { "▼" };
    Paragraph::new(format!(
        "q quit   {esc}   ↑/↓ j/k select   s sort ({}{arrow})   r reverse   t tap the selected stage",
        model.sort.label()
    ))
    .style(Style::new().add_modifier(Modifier::REVERSED))
}

fn cell(text: String, number: bool) -> Cell<'static> {
    let line = Line::from(text);
    Cell::from(if number { line.right_aligned() } else { line })
}

/// Events per second, with the precision that a glance needs.
fn rate(per_sec: f64) -> String {
    match per_sec {
        r if r >= 10_000.0 => format!("{:.1}k", r / 1000.0),
        r if r >= 100.0 => format!("{r:.0}"),
        r => format!("{r:.1}"),
    }
}

fn millis(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.2}")
    }
}

/// `HH:MM:SS` (UTC) of milliseconds since the epoch.
fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `HH:MM:SS.mmm` (UTC): an event's time.
fn clock_millis(ms: i64) -> String {
    format!("{}.{:03}", clock(ms), ms.rem_euclid(1000))
}

/// A duration the way a person says it.
fn span_ms(ms: i64) -> String {
    match ms.max(0) / 1000 {
        s if s < 90 => format!("{s} s"),
        s if s < 5400 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;
    use std::time::{Duration, Instant};

    /// The screen as text, one string per row.
    fn render(model: &Model, tap: Option<&TapPane>) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
        terminal.draw(|frame| draw(frame, model, tap)).unwrap();
        let buffer = terminal.backend().buffer();
        buffer
            .content()
            .chunks(buffer.area.width as usize)
            .map(|row| row.iter().map(|cell| cell.symbol()).collect())
            .collect()
    }

    fn row<'a>(screen: &'a [String], containing: &str) -> &'a str {
        screen
            .iter()
            .find(|line| line.contains(containing))
            .unwrap_or_else(|| panic!("no row with {containing:?}:\n{}", screen.join("\n")))
    }

    /// The words of a stage's row after its name, without the border.
    fn cells_after<'a>(screen: &'a [String], name: &str) -> Vec<&'a str> {
        let words: Vec<&str> = row(screen, name)
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|word| !word.is_empty())
            .collect();
        let at = words.iter().position(|word| *word == name).unwrap();
        words[at + 1..].to_vec()
    }

    fn model_of_two_polls() -> Model {
        let mut model = Model::new("http://127.0.0.1:9598");
        let poll = |n: u64| {
            json!({ "stages": [
                { "name": "sensors", "kind": "source", "component": "wasm", "inputs": [],
                  "events_in": 0, "events_out": 40 * n, "rate_in": 0.0, "rate_out": 0.0,
                  "errors": 0, "dead_lettered": 0, "queue_depth": 0, "call_ms": 0.25 },
                { "name": "plausible", "kind": "transform", "component": "wasm", "inputs": ["sensors"],
                  "events_in": 40 * n, "events_out": 30 * n, "rate_in": 0.0, "rate_out": 0.0,
                  "errors": n, "dead_lettered": 0, "queue_depth": 0, "call_ms": null },
                { "name": "readings", "kind": "sink", "component": "file", "inputs": ["plausible"],
                  "events_in": 30 * n, "events_out": 30 * n, "rate_in": 0.0, "rate_out": 0.0,
                  "errors": 0, "dead_lettered": 0, "queue_depth": 3 },
            ], "devices": null, "alerts": { "firing": [], "resolved": [] } })
        };
        let start = Instant::now();
        model.apply(poll(1), start, 3_600_000).unwrap();
        model
            .apply(poll(3), start + Duration::from_secs(2), 3_602_000)
            .unwrap();
        model
    }

    #[test]
    fn the_screen_shows_every_stage_with_its_rates_and_the_keys() {
        let model = model_of_two_polls();
        let screen = render(&model, None);
        assert_eq!(
            cells_after(&screen, "sensors"),
            [
                "source", "wasm", "0.0", "40.0", "0", "0.0", "0", "0.0", "0", "0.25"
            ]
        );
        assert_eq!(
            cells_after(&screen, "plausible"),
            [
                "transform",
                "wasm",
                "40.0",
                "30.0",
                "3",
                "1.0",
                "0",
                "0.0",
                "0",
                "-"
            ]
        );
        assert!(row(&screen, "readings").contains("file"));
        assert!(
            row(&screen, "refreshed").contains("01:00:02 UTC"),
            "{screen:?}"
        );
        assert!(row(&screen, "in 40.0/s").contains("out 30.0/s"));
        let keys = screen.last().unwrap();
        assert!(keys.starts_with("q quit"), "{keys}");
        assert!(keys.contains("s sort (name▲)"), "{keys}");
        assert!(screen.iter().all(|line| !line.contains("devices")));
    }

    #[test]
    fn the_sort_indicator_marks_the_sort_column_in_its_direction() {
        let mut model = model_of_two_polls();
        assert!(row(&render(&model, None), "component").contains("name▲"));
        model.cycle_sort();
        let screen = render(&model, None);
        let header = row(&screen, "component");
        assert!(
            header.contains("in/s▼") && !header.contains("name▲"),
            "{header}"
        );
        model.reverse();
        assert!(row(&render(&model, None), "component").contains("in/s▲"));
    }

    #[test]
    fn a_failed_poll_is_a_line_in_the_header() {
        let mut model = model_of_two_polls();
        model.failed(
            "http://h/v1/admin/overview answered 401 Unauthorized".into(),
            3_603_000,
        );
        let screen = render(&model, None);
        assert!(
            row(&screen, "poll failed")
                .contains("01:00:03 UTC, retrying: http://h/v1/admin/overview answered 401"),
            "{screen:?}"
        );
        assert!(
            row(&screen, "sensors").contains("40.0"),
            "the last data stays"
        );
    }

    #[test]
    fn devices_show_their_state_last_contact_and_release() {
        let mut model = Model::new("http://h");
        let overview = json!({ "stages": [], "alerts": { "firing": [] }, "devices": {
            "gw1": { "group": "gateways", "last_seen_ms": 95_000, "applied": "r1", "offered": "r2" },
            "gw2": { "group": "gateways", "last_seen_ms": null },
        }});
        model.apply(overview, Instant::now(), 100_000).unwrap();
        let screen = render(&model, None);
        assert!(row(&screen, "devices: 1 of 2 online").contains('┌'));
        let gw1: Vec<&str> = row(&screen, "gw1").split_whitespace().collect();
        assert_eq!(
            gw1,
            [
                "│gw1", "gateways", "online", "5", "s", "ago", "r1", "(offered", "r2)", "│"
            ]
        );
        assert!(row(&screen, "gw2").contains("never seen"));
    }

    #[test]
    fn the_tap_pane_shows_the_newest_events_at_the_bottom_and_its_counts() {
        let model = model_of_two_polls();
        let mut tap = TapPane::new("plausible");
        for n in 0..40 {
            tap.take_line(&format!(
                r#"{{"stage":"plausible","route":null,"key":"d{n}","timestamp_ms":{},"headers":{{}},"payload":{{"seq":{n}}},"payload_encoding":"json"}}"#,
                3_600_000 + n
            ));
        }
        tap.take_line(r#"{"tap":{"sent":40,"dropped":2}}"#);
        let screen = render(&model, Some(&tap));
        assert!(row(&screen, "tap: plausible").contains("sent 40   dropped 2"));
        let events: Vec<&String> = screen.iter().filter(|l| l.contains("{\"seq\":")).collect();
        assert!(events.len() > 5, "{screen:?}");
        assert!(
            events
                .last()
                .unwrap()
                .contains("01:00:00.039 d39 {\"seq\":39}"),
            "{events:?}"
        );
        assert!(screen.last().unwrap().contains("Esc close tap"));

        tap.error = Some("http://h/v1/tap/plausible answered 404 Not Found: no such stage".into());
        let screen = render(&model, Some(&tap));
        assert!(row(&screen, "404 Not Found").contains("no such stage"));
    }
}
