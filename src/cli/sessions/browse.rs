//! `custody sessions browse`: the recorded sessions as a full-screen list (ratatui), a detail
//! line for the selected one, `/` to narrow the list, and Enter to play the session in the
//! player (`custody_replay`).

use std::fmt::Write as _;
use std::io::{IsTerminal, Stdout};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use custody_replay::{PlayOptions, PlaySource};
use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table, TableState};

use super::list::{FilterArgs, command, kind_name, printable, started, status, target, who};
use crate::cli::source::{Listed, Source, SourceArgs};

/// `custody sessions browse`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Runs the browser until the user quits.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "browse needs a terminal; `custody sessions list` prints the same sessions as text"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let source = Source::open(&args.source)?;
    let sessions = runtime.block_on(source.list(&args.filter.to_filter()))?;
    let mut browser = Browser::new(sessions);
    enable_raw_mode().context("cannot put the terminal in raw mode")?;
    let _restore = Restore;
    execute!(std::io::stdout(), EnterAlternateScreen).context("cannot set up the terminal")?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .context("cannot set up the terminal")?;
    terminal.clear()?;
    loop {
        terminal.draw(|frame| draw(frame, &mut browser))?;
        if !event::poll(Duration::from_millis(500))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        match browser.key(key) {
            Action::None => {}
            Action::Quit => return Ok(ExitCode::SUCCESS),
            Action::Open(id) => {
                browser.message = None;
                if let Err(e) = open(&runtime, &source, &id, &mut terminal) {
                    browser.message = Some(format!("cannot play {id}: {e:#}"));
                }
                terminal.clear()?;
            }
        }
    }
}

/// Restores the terminal when the browser ends, also on an error.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen);
    }
}

/// Plays one session on the browser's terminal, then returns to the list.
fn open(
    runtime: &tokio::runtime::Runtime,
    source: &Source,
    id: &str,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
) -> anyhow::Result<()> {
    let session = runtime.block_on(source.player_session(id, None))?;
    custody_replay::play_on(
        terminal,
        PlaySource::Session(Box::new(session)),
        &PlayOptions::default(),
    )?;
    Ok(())
}

/// What a key asks the browser to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    None,
    Quit,
    Open(String),
}

/// The list, what is shown of it, the selection and the filter being typed.
struct Browser {
    all: Vec<Listed>,
    /// Indices into `all` of the sessions the filter keeps.
    shown: Vec<usize>,
    table: TableState,
    filter: String,
    editing: bool,
    message: Option<String>,
}

impl Browser {
    fn new(all: Vec<Listed>) -> Self {
        let mut browser = Self {
            shown: (0..all.len()).collect(),
            all,
            table: TableState::default(),
            filter: String::new(),
            editing: false,
            message: None,
        };
        browser.refilter();
        browser
    }

    fn selected(&self) -> Option<&Listed> {
        self.table
            .selected()
            .and_then(|i| self.shown.get(i))
            .map(|&i| &self.all[i])
    }

    fn refilter(&mut self) {
        let needle = self.filter.to_lowercase();
        self.shown = self
            .all
            .iter()
            .enumerate()
            .filter(|(_, s)| needle.is_empty() || haystack(s).contains(&needle))
            .map(|(i, _)| i)
            .collect();
        self.table.select((!self.shown.is_empty()).then_some(0));
        *self.table.offset_mut() = 0;
    }

    fn step(&mut self, by: isize) {
        if self.shown.is_empty() {
            return;
        }
        let last = self.shown.len() - 1;
        let at = self.table.selected().unwrap_or(0);
        let next = at.saturating_add_signed(by).min(last);
        self.table.select(Some(next));
    }

    fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                    self.refilter();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                    self.refilter();
                }
                KeyCode::Char(c) => {
                    self.filter.push(c);
                    self.refilter();
                }
                _ => {}
            }
            return Action::None;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.filter.is_empty() => return Action::Quit,
            KeyCode::Esc => {
                self.filter.clear();
                self.refilter();
            }
            KeyCode::Char('/') => {
                self.editing = true;
                self.message = None;
            }
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::PageDown => self.step(PAGE),
            KeyCode::PageUp => self.step(-PAGE),
            KeyCode::Home | KeyCode::Char('g') => self.step(isize::MIN),
            KeyCode::End | KeyCode::Char('G') => self.step(isize::MAX),
            KeyCode::Enter => {
                if let Some(s) = self.selected() {
                    return Action::Open(s.summary.id.clone());
                }
            }
            _ => {}
        }
        Action::None
    }
}

/// How far Page Up and Page Down move.
const PAGE: isize = 10;

/// What `/` searches in a session, lowercase.
fn haystack(s: &Listed) -> String {
    let m = &s.summary;
    let mut text = [
        m.id.as_str(),
        &m.initiator,
        &m.effective_user,
        &m.cluster,
        &m.namespace,
        &m.pod,
        &m.container,
        &m.status,
        kind_name(m.kind),
    ]
    .join(" ");
    text.push(' ');
    text.push_str(&m.command.join(" "));
    if let Some(snippet) = &s.snippet {
        text.push(' ');
        text.push_str(snippet);
    }
    text.to_lowercase()
}

/// Draws the browser: a title, the table, the selected session's detail, the keys.
fn draw(frame: &mut Frame<'_>, b: &mut Browser) {
    let [title, list, detail, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let mut heading = format!("custody sessions: {} of {}", b.shown.len(), b.all.len());
    if !b.filter.is_empty() {
        let _ = write!(heading, " matching {:?}", b.filter);
    }
    frame.render_widget(
        Paragraph::new(heading).style(Style::default().add_modifier(Modifier::BOLD)),
        title,
    );
    let header = Row::new([
        "STARTED (UTC)",
        "KIND",
        "WHO",
        "TARGET",
        "COMMAND",
        "STATUS",
    ])
    .style(Style::default().add_modifier(Modifier::UNDERLINED));
    let rows: Vec<Row<'_>> = b
        .shown
        .iter()
        .map(|&i| {
            let s = &b.all[i].summary;
            Row::new([
                started(&s.started_at),
                kind_name(s.kind).to_owned(),
                who(s),
                target(s),
                command(s),
                status(s),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(19),
        Constraint::Length(12),
        Constraint::Fill(1),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    frame.render_stateful_widget(table, list, &mut b.table);
    let detail_text: Vec<Line<'_>> = match (&b.message, b.selected()) {
        (Some(message), _) => vec![Line::from(printable(message, 400))],
        (None, Some(s)) => {
            let m = &s.summary;
            let mut first = format!(
                "{}  {} bytes  started {}",
                printable(&m.id, 64),
                m.file_size,
                printable(&m.started_at, 40)
            );
            if let Some(ended) = &m.ended_at {
                let _ = write!(first, "  ended {}", printable(ended, 40));
            }
            let second = match (&s.snippet, &m.damage) {
                (Some(snippet), _) => format!("match: {}", printable(snippet, 300)),
                (None, Some(damage)) => format!("damaged: {}", printable(damage, 300)),
                (None, None) => format!("{}  {}", who(m), target(m)),
            };
            vec![Line::from(first), Line::from(second)]
        }
        (None, None) if b.all.is_empty() => vec![Line::from("no sessions match the filters")],
        (None, None) => vec![Line::from("nothing matches; Esc clears the filter")],
    };
    frame.render_widget(Paragraph::new(detail_text), detail);
    let help = if b.editing {
        format!("/{}_   Enter: keep this filter   Esc: clear it", b.filter)
    } else {
        "Up/Down: move   Enter: play   /: filter   Esc: clear filter   q: quit".to_owned()
    };
    frame.render_widget(
        Paragraph::new(help).style(Style::default().add_modifier(Modifier::DIM)),
        keys,
    );
}

#[cfg(test)]
mod tests {
    use custody_recorder::model::SessionKind;
    use custody_web::model::SessionSummary;
    use ratatui::backend::TestBackend;

    use super::*;

    fn listed(n: u32, initiator: &str, pod: &str, command: &[&str]) -> Listed {
        Listed {
            summary: SessionSummary {
                id: format!("0b6f3c1e-5d2a-4c8e-9f1a-{n:012}"),
                kind: SessionKind::Exec,
                initiator: initiator.into(),
                effective_user: initiator.into(),
                cluster: "prod".into(),
                namespace: "default".into(),
                pod: pod.into(),
                container: String::new(),
                command: command.iter().map(|&s| s.to_owned()).collect(),
                tty: true,
                started_at: format!("2026-11-27T15:0{n}:00Z"),
                ended_at: None,
                exit_code: Some(0),
                status: "complete".into(),
                reason: None,
                damage: None,
                file_size: 1000 + u64::from(n),
                replica_id: None,
            },
            snippet: (n == 2).then(|| "$ «cat» /etc/passwd".to_owned()),
        }
    }

    fn draw_on(terminal: &mut Terminal<TestBackend>, b: &mut Browser) {
        terminal.draw(|frame| draw(frame, b)).unwrap();
    }

    fn screen(terminal: &Terminal<TestBackend>) -> Vec<String> {
        let buffer = terminal.backend().buffer();
        let width = usize::from(buffer.area.width);
        buffer
            .content()
            .chunks(width)
            .map(|row| {
                row.iter()
                    .map(ratatui::buffer::Cell::symbol)
                    .collect::<String>()
            })
            .map(|line| line.trim_end().to_owned())
            .collect()
    }

    fn press(b: &mut Browser, code: KeyCode) -> Action {
        b.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn the_list_shows_each_session_and_the_selected_ones_detail() {
        let mut b = Browser::new(vec![
            listed(1, "alice", "web-1", &["sh"]),
            listed(2, "bob", "db-0", &["cat", "/etc/passwd"]),
        ]);
        let mut terminal = Terminal::new(TestBackend::new(120, 10)).unwrap();
        draw_on(&mut terminal, &mut b);
        let lines = screen(&terminal);
        assert_eq!(lines[0], "custody sessions: 2 of 2", "{lines:#?}");
        assert!(lines[1].contains("STARTED (UTC)") && lines[1].contains("COMMAND"));
        assert!(lines[2].starts_with("> 2026-11-27 15:01:00"), "{lines:#?}");
        assert!(lines[2].contains("alice") && lines[2].contains("prod/default/web-1"));
        assert!(lines[3].contains("bob") && lines[3].contains("cat /etc/passwd"));
        assert!(
            lines[7].starts_with("0b6f3c1e-5d2a-4c8e-9f1a-000000000001  1001 bytes"),
            "{lines:#?}"
        );
        assert!(lines[9].contains("Enter: play"), "{lines:#?}");

        assert_eq!(press(&mut b, KeyCode::Down), Action::None);
        draw_on(&mut terminal, &mut b);
        let lines = screen(&terminal);
        assert!(lines[3].starts_with("> "), "{lines:#?}");
        assert_eq!(lines[8], "match: $ «cat» /etc/passwd");
        assert_eq!(
            press(&mut b, KeyCode::Enter),
            Action::Open("0b6f3c1e-5d2a-4c8e-9f1a-000000000002".into())
        );
    }

    #[test]
    fn slash_narrows_the_list_and_esc_clears_it() {
        let mut b = Browser::new(vec![
            listed(1, "alice", "web-1", &["sh"]),
            listed(2, "bob", "db-0", &["psql"]),
            listed(3, "carol", "web-2", &["bash"]),
        ]);
        press(&mut b, KeyCode::Char('/'));
        for c in "WEB".chars() {
            press(&mut b, KeyCode::Char(c));
        }
        let mut terminal = Terminal::new(TestBackend::new(120, 10)).unwrap();
        draw_on(&mut terminal, &mut b);
        let lines = screen(&terminal);
        assert_eq!(lines[0], "custody sessions: 2 of 3 matching \"WEB\"");
        assert!(
            lines[2].contains("alice") && lines[3].contains("carol"),
            "{lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains("bob")), "{lines:#?}");
        assert!(lines[9].starts_with("/WEB_"), "{lines:#?}");
        // q is text while typing a filter; Enter keeps the filter.
        press(&mut b, KeyCode::Char('q'));
        assert!(b.shown.is_empty());
        press(&mut b, KeyCode::Backspace);
        press(&mut b, KeyCode::Enter);
        assert_eq!(b.shown.len(), 2);
        press(&mut b, KeyCode::End);
        assert_eq!(
            press(&mut b, KeyCode::Enter),
            Action::Open("0b6f3c1e-5d2a-4c8e-9f1a-000000000003".into())
        );
        press(&mut b, KeyCode::Esc);
        assert_eq!(b.shown.len(), 3);
        assert_eq!(press(&mut b, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn an_empty_list_says_so() {
        let mut b = Browser::new(Vec::new());
        let mut terminal = Terminal::new(TestBackend::new(80, 8)).unwrap();
        draw_on(&mut terminal, &mut b);
        let lines = screen(&terminal);
        assert_eq!(lines[0], "custody sessions: 0 of 0");
        assert!(
            lines.iter().any(|l| l == "no sessions match the filters"),
            "{lines:#?}"
        );
        assert_eq!(press(&mut b, KeyCode::Enter), Action::None);
    }
}
