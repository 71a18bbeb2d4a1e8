//! Drawing a [`Player`] with ratatui: the header (who, where, what, when, how it ended, whether
//! the file verified), the session's terminal at its recorded size (or, without a terminal, the
//! output as a log with stderr marked), the timeline bar and the status line; the typed-input
//! pane and the help overlay on top.

use custody_recorder::model::{SessionKind, SessionStatus};
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::player::{Mode, Player};
use crate::session::{Integrity, KeyOrigin};

/// The marker before a line of stderr in a non-tty session's log.
pub const STDERR_MARK: &str = "! ";
/// The marker before a line of stdout in a non-tty session's log.
pub const STDOUT_MARK: &str = "  ";

/// Rows used by the header above the session and the bar and status line below it.
pub const CHROME_ROWS: u16 = 4;

/// Draws the whole player.
pub fn draw(frame: &mut Frame<'_>, player: &Player) {
    let area = frame.area();
    let buf = frame.buffer_mut();
    render(area, buf, player);
}

/// Renders the player into `buf` over `area`.
pub fn render(area: Rect, buf: &mut Buffer, player: &Player) {
    let rows = |y: u16, h: u16| Rect::new(area.x, area.y + y, area.width, h);
    let header_h = area.height.min(2);
    header(rows(0, header_h), buf, player);
    let below = area.height.saturating_sub(header_h);
    let bar_h = below.min(2);
    let body = rows(header_h, below - bar_h);
    let cropped = if player.session().timeline.is_tty() {
        terminal(body, buf, player)
    } else {
        log(body, buf, player);
        None
    };
    if player.shows_input() {
        input_pane(body, buf, player);
    }
    if bar_h >= 1 {
        timeline_bar(rows(header_h + body.height, 1), buf, player);
    }
    if bar_h >= 2 {
        status_line(rows(header_h + body.height + 1, 1), buf, player, cropped);
    }
    if *player.mode() == Mode::Help {
        help(area, buf);
    }
}

fn header(area: Rect, buf: &mut Buffer, player: &Player) {
    let session = player.session();
    let meta = session.timeline.meta();
    let mut target = format!("{}/{}/{}", meta.cluster, meta.namespace, meta.pod);
    if !meta.container.is_empty() {
        target.push('/');
        target.push_str(&meta.container);
    }
    let what = match meta.kind {
        SessionKind::Exec => format!("$ {}", meta.command.join(" ")),
        SessionKind::Attach => "attach".to_owned(),
        SessionKind::PortForward => "port-forward".to_owned(),
        SessionKind::Api => "api".to_owned(),
    };
    let dim = Style::default().fg(Color::DarkGray);
    let first = Line::from(vec![
        Span::styled(
            format!("{} → {}", meta.initiator.username, meta.effective.user),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled("  ", dim),
        Span::raw(target),
        Span::styled("  ", dim),
        Span::styled(what, Style::default().fg(Color::Cyan)),
    ]);
    let started = chrono::DateTime::from_timestamp_micros(meta.started_at_us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let (integrity, color) = integrity_text(player);
    let second = Line::from(vec![
        Span::raw(started),
        Span::styled("  ", dim),
        Span::raw(ending(player)),
        Span::styled("  ", dim),
        Span::styled(integrity, Style::default().fg(color)),
    ]);
    Paragraph::new(vec![first, second])
        .style(Style::default().bg(Color::Black))
        .render_into(area, buf);
}

/// How the session ended, in a few words.
pub fn ending(player: &Player) -> String {
    let session = player.session();
    let exit = session.timeline.exit().map(|(code, message)| match code {
        Some(code) => format!("exit {code}"),
        None if message.is_empty() => "exit (no code)".to_owned(),
        None => format!("failed: {message}"),
    });
    match &session.status {
        SessionStatus::Open if session.live => "running (live)".to_owned(),
        SessionStatus::Open => exit.unwrap_or_else(|| "no end recorded".to_owned()),
        SessionStatus::Complete => exit.unwrap_or_else(|| "ended".to_owned()),
        SessionStatus::Terminated { reason } => match exit {
            Some(exit) => format!("terminated: {reason} ({exit})"),
            None => format!("terminated: {reason}"),
        },
        SessionStatus::Interrupted => match exit {
            Some(exit) => format!("interrupted ({exit})"),
            None => "interrupted (the gateway stopped)".to_owned(),
        },
    }
}

fn integrity_text(player: &Player) -> (String, Color) {
    let session = player.session();
    let key = match session.key {
        KeyOrigin::NamedInFile => "key named in the file",
        KeyOrigin::Given => "given key",
        KeyOrigin::DataDir => "data dir key",
        KeyOrigin::Gateway => "gateway key",
    };
    match &session.integrity {
        Integrity::Intact => (format!("verified: intact ({key})"), Color::Green),
        Integrity::Interrupted { verified_until_us } => {
            let tail = if session.timeline.unverified_from_us().is_some() {
                ", then unverified"
            } else {
                ""
            };
            (
                format!(
                    "verified: interrupted, to {}{tail} ({key})",
                    clock_text(*verified_until_us)
                ),
                Color::Yellow,
            )
        }
        Integrity::Altered { first_bad } => (
            format!("verified: ALTERED at {first_bad} ({key})"),
            Color::Red,
        ),
    }
}

/// Draws the terminal at its recorded size from the area's top-left; returns the shown size
/// when the terminal is larger than the area (cropped).
fn terminal(area: Rect, buf: &mut Buffer, player: &Player) -> Option<(u16, u16)> {
    let screen = player.screen();
    let (cols, rows) = screen.size();
    let term = screen.terminal();
    let show_w = cols.min(area.width);
    let show_h = rows.min(area.height);
    let cursor = screen.cursor();
    for (y, line) in term
        .screen()
        .visible_lines()
        .enumerate()
        .take(usize::from(show_h))
    {
        let y16 = u16::try_from(y).unwrap_or(u16::MAX);
        let mut x = 0u16;
        for (col, cell) in line.cells().iter().enumerate() {
            if x >= show_w {
                break;
            }
            let width = cell.width();
            if width == 0 {
                continue;
            }
            if width == 2 && x + 1 >= show_w {
                break;
            }
            let mut style = pen_style(cell.pen());
            if cursor.visible && cursor.row == y && cursor.col == col {
                style = style.add_modifier(Modifier::REVERSED);
            }
            let out = &mut buf[(area.x + x, area.y + y16)];
            out.set_char(cell.char());
            out.set_style(style);
            x += u16::from(width);
        }
    }
    // The terminal's edge, when the area is larger.
    let edge = Style::default().fg(Color::DarkGray);
    if area.width > cols {
        for y in 0..show_h {
            buf[(area.x + cols, area.y + y)]
                .set_char('│')
                .set_style(edge);
        }
    }
    if area.height > rows {
        for x in 0..show_w {
            buf[(area.x + x, area.y + rows)]
                .set_char('─')
                .set_style(edge);
        }
        if area.width > cols {
            buf[(area.x + cols, area.y + rows)]
                .set_char('┘')
                .set_style(edge);
        }
    }
    (show_w < cols || show_h < rows).then_some((show_w, show_h))
}

fn pen_style(pen: &avt::Pen) -> Style {
    let mut style = Style::default();
    if let Some(fg) = pen.foreground() {
        style = style.fg(color(fg));
    }
    if let Some(bg) = pen.background() {
        style = style.bg(color(bg));
    }
    let flags = [
        (pen.is_bold(), Modifier::BOLD),
        (pen.is_faint(), Modifier::DIM),
        (pen.is_italic(), Modifier::ITALIC),
        (pen.is_underline(), Modifier::UNDERLINED),
        (pen.is_strikethrough(), Modifier::CROSSED_OUT),
        (pen.is_blink(), Modifier::SLOW_BLINK),
        (pen.is_inverse(), Modifier::REVERSED),
    ];
    for (on, modifier) in flags {
        if on {
            style = style.add_modifier(modifier);
        }
    }
    style
}

fn color(c: avt::Color) -> Color {
    match c {
        avt::Color::Indexed(i) => Color::Indexed(i),
        avt::Color::RGB(rgb) => Color::Rgb(rgb.r, rgb.g, rgb.b),
    }
}

/// A non-tty session: the output as a log, newest at the bottom, stderr in red after `! `.
fn log(area: Rect, buf: &mut Buffer, player: &Player) {
    if area.width <= 2 || area.height == 0 {
        return;
    }
    let position = player.position_us();
    let timeline = &player.session().timeline;
    let lines = timeline.log();
    let shown = lines.partition_point(|l| l.first_us() <= position);
    let width = usize::from(area.width - 2);
    let height = usize::from(area.height);
    // Wrapped rows from the newest line back, until the area is full.
    let mut rows: Vec<(bool, String)> = Vec::new();
    for line in lines[..shown].iter().rev() {
        let text = line.text_at(position);
        let chars: Vec<char> = text.chars().collect();
        let mut wrapped: Vec<String> = chars.chunks(width).map(|c| c.iter().collect()).collect();
        if wrapped.is_empty() {
            wrapped.push(String::new());
        }
        for row in wrapped.into_iter().rev() {
            rows.push((line.stderr, row));
        }
        if rows.len() >= height {
            break;
        }
    }
    rows.truncate(height);
    rows.reverse();
    let stderr = Style::default().fg(Color::Red);
    let text: Vec<Line<'_>> = rows
        .into_iter()
        .map(|(is_err, row)| {
            if is_err {
                Line::from(vec![
                    Span::styled(STDERR_MARK, stderr.add_modifier(Modifier::BOLD)),
                    Span::styled(row, stderr),
                ])
            } else {
                Line::from(vec![Span::raw(STDOUT_MARK), Span::raw(row)])
            }
        })
        .collect();
    Paragraph::new(text).render_into(area, buf);
}

fn input_pane(body: Rect, buf: &mut Buffer, player: &Player) {
    let timeline = &player.session().timeline;
    let (cols, _) = timeline.size();
    let free = body.width.saturating_sub(cols + 1);
    let width = if free >= 24 { free } else { body.width.min(36) };
    if width < 8 || body.height < 3 {
        return;
    }
    let area = Rect::new(body.x + body.width - width, body.y, width, body.height);
    Clear.render_into(area, buf);
    let position = player.position_us();
    let commands = timeline.commands();
    let current = commands.iter().rposition(|c| c.time_us <= position);
    let inner_h = usize::from(body.height.saturating_sub(2));
    let first = current.map_or(0, |c| (c + 1).saturating_sub(inner_h.max(1)));
    let lines: Vec<Line<'_>> = commands
        .iter()
        .enumerate()
        .skip(first)
        .take(inner_h)
        .map(|(i, c)| {
            let style = match current {
                Some(cur) if cur == i => Style::default().add_modifier(Modifier::REVERSED),
                Some(cur) if i < cur => Style::default(),
                _ => Style::default().fg(Color::DarkGray),
            };
            Line::from(vec![
                Span::styled(clock_text(c.time_us), Style::default().fg(Color::DarkGray)),
                Span::raw(" "),
                Span::styled(c.text.clone(), style),
            ])
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::from("(nothing typed)")]
    } else {
        lines
    };
    Paragraph::new(lines)
        .block(Block::default().borders(Borders::ALL).title(" typed (i) "))
        .render_into(area, buf);
}

fn timeline_bar(area: Rect, buf: &mut Buffer, player: &Player) {
    let timeline = &player.session().timeline;
    let clock = player.clock();
    let position = player.position_us();
    let end = player.end_us();
    let state = if player.is_following() {
        "● live"
    } else if clock.is_playing() {
        "▶"
    } else {
        "⏸"
    };
    let left = format!(
        " {state} {}x{} {} ",
        clock.speed(),
        if clock.skips_idle() { " skip-idle" } else { "" },
        clock_text(position)
    );
    let right = format!(" {} ", clock_text(end));
    let left_w = u16::try_from(left.chars().count()).unwrap_or(u16::MAX);
    let right_w = u16::try_from(right.chars().count()).unwrap_or(u16::MAX);
    let bar_w = area.width.saturating_sub(left_w + right_w);
    let mut spans = vec![Span::styled(
        left,
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if bar_w >= 4 {
        let w = u64::from(bar_w);
        let at = |t: u64| -> usize {
            let cell = if end == 0 {
                0
            } else {
                u128::from(t.min(end)) * u128::from(w - 1) / u128::from(end)
            };
            usize::try_from(cell).unwrap_or(0)
        };
        let mut cells: Vec<(char, Style)> = (0..usize::from(bar_w))
            .map(|_| ('─', Style::default().fg(Color::DarkGray)))
            .collect();
        let here = at(position);
        for (i, cell) in cells.iter_mut().enumerate().take(here) {
            let _ = i;
            *cell = ('━', Style::default().fg(Color::Cyan));
        }
        if let Some(from) = timeline.unverified_from_us() {
            for cell in cells.iter_mut().skip(at(from) + 1) {
                cell.1 = Style::default().fg(Color::Yellow);
                if cell.0 == '─' {
                    cell.0 = '┄';
                }
            }
        }
        for marker in timeline.markers() {
            if let Some(cell) = cells.get_mut(at(marker.time_us)) {
                *cell = ('◆', Style::default().fg(Color::Magenta));
            }
        }
        if let Some(cell) = cells.get_mut(here) {
            *cell = (
                '●',
                Style::default()
                    .fg(Color::White)
                    .add_modifier(Modifier::BOLD),
            );
        }
        spans.extend(
            cells
                .into_iter()
                .map(|(c, s)| Span::styled(c.to_string(), s)),
        );
    }
    spans.push(Span::raw(right));
    Paragraph::new(Line::from(spans)).render_into(area, buf);
}

fn status_line(area: Rect, buf: &mut Buffer, player: &Player, cropped: Option<(u16, u16)>) {
    let timeline = &player.session().timeline;
    let line = if let Mode::Search(text) = player.mode() {
        Line::from(vec![
            Span::styled("/", Style::default().fg(Color::Yellow)),
            Span::raw(text.clone()),
            Span::styled("█", Style::default().fg(Color::Yellow)),
            Span::styled(
                "  Enter: find after here  Esc: cancel",
                Style::default().fg(Color::DarkGray),
            ),
        ])
    } else {
        let mut spans = Vec::new();
        if timeline.is_unverified_at(player.position_us()) {
            spans.push(Span::styled(
                "UNVERIFIED ",
                Style::default().fg(Color::Black).bg(Color::Yellow),
            ));
        }
        if let Some((w, h)) = cropped {
            let (cols, rows) = player.screen().size();
            spans.push(Span::styled(
                format!("cropped: {w}x{h} of {cols}x{rows} (top-left) "),
                Style::default().fg(Color::Yellow),
            ));
        }
        match player.message() {
            Some(message) => spans.push(Span::raw(message.to_owned())),
            None => spans.push(Span::styled(
                "space pause  ←/→ 5s  +/- speed  n/N command  / search  i input  ? help  q quit",
                Style::default().fg(Color::DarkGray),
            )),
        }
        Line::from(spans)
    };
    Paragraph::new(line).render_into(area, buf);
}

/// The help overlay's lines.
pub const HELP: [(&str, &str); 16] = [
    ("space", "pause / resume"),
    ("← →", "back / forward 5 s"),
    ("shift+← →", "back / forward 60 s"),
    ("+ -", "speed 1x 2x 4x 8x 16x"),
    ("s", "skip idle time (pauses ≤ 1 s)"),
    ("g G", "start / end (live: back to live)"),
    ("n N", "next / previous typed command"),
    ("] [", "next / previous marker"),
    ("/", "search the output"),
    ("Enter", "next match of the search"),
    ("i", "typed input pane"),
    ("?", "this help"),
    ("q", "quit"),
    ("", ""),
    ("stderr", "non-tty sessions mark it with ! in red"),
    ("yellow", "events no checkpoint verifies yet"),
];

fn help(area: Rect, buf: &mut Buffer) {
    let width = area.width.min(52);
    let height = area.height.min(u16::try_from(HELP.len()).unwrap_or(0) + 2);
    let x = area.x + (area.width - width) / 2;
    let y = area.y + (area.height - height) / 2;
    let rect = Rect::new(x, y, width, height);
    Clear.render_into(rect, buf);
    let lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!("{keys:>10}  "), Style::default().fg(Color::Yellow)),
                Span::raw(*what),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" keys (any key closes) "),
        )
        .render_into(rect, buf);
}

/// `m:ss`, or `h:mm:ss` from an hour on.
pub fn clock_text(us: u64) -> String {
    let s = us / 1_000_000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// Rendering into a buffer region, for widgets that take `self` by value.
trait RenderInto {
    fn render_into(self, area: Rect, buf: &mut Buffer);
}

impl<W: ratatui::widgets::Widget> RenderInto for W {
    fn render_into(self, area: Rect, buf: &mut Buffer) {
        if area.width > 0 && area.height > 0 {
            self.render(area, buf);
        }
    }
}
