//! How `top` draws its model with ratatui: a header, the node table, the output of the
//! followed node, a footer for keys, prompts and messages. States are words as well as
//! colours, and the selected row is marked with `>` as well as shown in reverse video,
//! so everything reads on a terminal without colour (or with `NO_COLOR` set). Columns
//! that do not fit are left out, least needed first; a terminal too small for any
//! table gets a message instead.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap,
};

use super::model::{Mode, Model};
use crate::control::show::uptime;

/// The smallest terminal the view draws in.
pub const MIN_WIDTH: u16 = 50;
pub const MIN_HEIGHT: u16 = 12;

/// What the view keeps between frames: where the table is scrolled to.
#[derive(Default)]
pub struct View {
    table: TableState,
    /// Colours on (off with `NO_COLOR`).
    pub colour: bool,
    /// The nodes whose rows the last frame showed: the ones worth sampling.
    pub shown: Vec<String>,
}

/// A column: its header, its width, and how much it is needed (lower goes last).
struct Column {
    header: &'static str,
    width: u16,
    need: u8,
}

const COLUMNS: [Column; 9] = [
    Column {
        header: "NODE",
        width: 8,
        need: 9,
    },
    Column {
        header: "STATE",
        width: 10,
        need: 8,
    },
    Column {
        header: "PID",
        width: 7,
        need: 6,
    },
    Column {
        header: "UPTIME",
        width: 6,
        need: 5,
    },
    Column {
        header: "CPU%",
        width: 5,
        need: 7,
    },
    Column {
        header: "MEM",
        width: 6,
        need: 4,
    },
    Column {
        header: "RESTARTS",
        width: 8,
        need: 3,
    },
    Column {
        header: "HEALTH",
        width: 8,
        need: 2,
    },
    Column {
        header: "LAST EXIT",
        width: 9,
        need: 1,
    },
];

/// The room the selection mark takes.
const MARK: &str = "> ";

impl View {
    pub fn new(colour: bool) -> View {
        View {
            table: TableState::default(),
            colour,
            shown: Vec::new(),
        }
    }

    /// Draws the whole screen.
    pub fn draw(&mut self, frame: &mut Frame, model: &mut Model, now: Instant) {
        let area = frame.area();
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            let text = format!(
                "terminal too small: {}x{}\nrhai-supervisor top needs at least {MIN_WIDTH}x{MIN_HEIGHT}\n(q quits)",
                area.width, area.height
            );
            frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
            self.shown.clear();
            return;
        }
        let body = area.height - 2;
        let table_height = (body * 11 / 20).max(4);
        let output_height = body - table_height;
        let header = Rect::new(area.x, area.y, area.width, 1);
        let table = Rect::new(area.x, area.y + 1, area.width, table_height);
        let output = Rect::new(area.x, table.y + table_height, area.width, output_height);
        let footer = Rect::new(area.x, area.y + area.height - 1, area.width, 1);
        self.header(frame, model, header);
        self.table(frame, model, table, now);
        self.output(frame, model, output);
        self.footer(frame, model, footer, now);
    }

    fn style(&self, colour: Color) -> Style {
        if self.colour {
            Style::new().fg(colour)
        } else {
            Style::new()
        }
    }

    fn state_style(&self, state: &str) -> Style {
        match state {
            "running" => self.style(Color::Green),
            "starting" => self.style(Color::Cyan),
            "waiting" => self.style(Color::Blue),
            "reviving" | "restarting" | "stopping" => self.style(Color::Yellow),
            "failed" => self.style(Color::Red).add_modifier(Modifier::BOLD),
            "exited" => self.style(Color::DarkGray),
            _ => Style::new(),
        }
    }

    fn header(&self, frame: &mut Frame, model: &Model, area: Rect) {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for row in model.rows.values() {
            match counts.iter_mut().find(|(s, _)| *s == row.state) {
                Some((_, n)) => *n += 1,
                None => counts.push((&row.state, 1)),
            }
        }
        let order = |s: &str| {
            [
                "running",
                "starting",
                "waiting",
                "reviving",
                "restarting",
                "stopping",
                "exited",
                "failed",
            ]
            .iter()
            .position(|o| *o == s)
            .unwrap_or(99)
        };
        counts.sort_by_key(|(s, _)| order(s));
        let mut spans = vec![
            Span::styled(
                "rhai-supervisor top",
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "  {} node{}",
                model.rows.len(),
                if model.rows.len() == 1 { "" } else { "s" }
            )),
        ];
        for (index, (state, count)) in counts.iter().enumerate() {
            spans.push(Span::raw(if index == 0 { ": " } else { ", " }));
            spans.push(Span::styled(
                format!("{count} {state}"),
                self.state_style(state),
            ));
        }
        // Last: a long path is cut at the edge, the counts are not.
        spans.push(Span::raw(format!("  {}", model.target)));
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    /// The columns that fit in `width`, in their order, and the name column's width.
    fn columns(width: u16, longest_name: u16) -> (Vec<&'static Column>, u16) {
        let mut shown: Vec<&Column> = COLUMNS.iter().collect();
        let used = |shown: &[&Column]| -> u16 {
            let widths: u16 = shown.iter().map(|c| c.width).sum();
            widths + shown.len() as u16 - 1 + MARK.len() as u16
        };
        while used(&shown) > width && shown.len() > 2 {
            let least = shown
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.need)
                .map(|(i, _)| i)
                .unwrap_or(0);
            shown.remove(least);
        }
        let spare = width.saturating_sub(used(&shown));
        let name = (COLUMNS[0].width + spare).min(longest_name.max(COLUMNS[0].width));
        (shown, name)
    }

    fn table(&mut self, frame: &mut Frame, model: &mut Model, area: Rect, now: Instant) {
        let selected = model.selected_index();
        let visible: Vec<String> = model.visible().iter().map(|s| s.to_string()).collect();
        model.page = area.height.saturating_sub(2).max(1) as usize;
        let longest = visible.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let (columns, name_width) =
            Self::columns(area.width, u16::try_from(longest).unwrap_or(u16::MAX));
        let dash = || "-".to_string();
        let rows: Vec<Row> = visible
            .iter()
            .map(|name| {
                let row = &model.rows[name];
                let cells = columns.iter().map(|column| match column.header {
                    "NODE" => Cell::from(name.clone()),
                    "STATE" => Cell::from(Span::styled(
                        row.state.clone(),
                        self.state_style(&row.state),
                    )),
                    "PID" => Cell::from(row.pid.map_or_else(dash, |p| p.to_string())),
                    "UPTIME" => Cell::from(row.since.map_or_else(dash, |since| {
                        uptime(now.duration_since(since).as_secs_f64())
                    })),
                    "CPU%" => Cell::from(row.cpu_percent.map_or_else(dash, |p| format!("{p:.1}"))),
                    "MEM" => Cell::from(row.memory.map_or_else(dash, bytes)),
                    "RESTARTS" => Cell::from(row.restarts.to_string()),
                    "HEALTH" => {
                        let health = row.health.clone().map(|h| h.replace("failing", "fail"));
                        let style = match &health {
                            Some(h) if h != "ok" => self.style(Color::Red),
                            _ => Style::new(),
                        };
                        Cell::from(Span::styled(health.unwrap_or_else(dash), style))
                    }
                    _ => Cell::from(row.last_exit.clone().unwrap_or_else(dash)),
                });
                Row::new(cells.collect::<Vec<_>>())
            })
            .collect();
        let widths: Vec<Constraint> = columns
            .iter()
            .map(|c| {
                if c.header == "NODE" {
                    Constraint::Length(name_width)
                } else {
                    Constraint::Length(c.width)
                }
            })
            .collect();
        let header = Row::new(columns.iter().map(|c| c.header).collect::<Vec<_>>())
            .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
        let empty = rows.is_empty();
        let table = Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .highlight_symbol(MARK)
            .highlight_spacing(HighlightSpacing::Always);
        self.table.select(selected);
        frame.render_stateful_widget(table, area, &mut self.table);
        let offset = self.table.offset().min(visible.len());
        let fit = area.height.saturating_sub(1) as usize;
        self.shown = visible[offset..(offset + fit).min(visible.len())].to_vec();
        if empty {
            let text = if model.filter.is_empty() {
                "no nodes yet".to_string()
            } else {
                format!("no node matches '{}'", model.filter)
            };
            let line = Rect::new(
                area.x + MARK.len() as u16,
                area.y + 1,
                area.width.saturating_sub(2),
                1,
            );
            frame.render_widget(Paragraph::new(text), line);
        }
    }

    fn output(&self, frame: &mut Frame, model: &Model, area: Rect) {
        let title = match &model.output.node {
            Some(node) => format!(" output of {node} "),
            None => " output: Enter follows the selected node ".to_string(),
        };
        let block = Block::new().borders(Borders::TOP).title(Span::styled(
            title,
            Style::new().add_modifier(Modifier::BOLD),
        ));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let room = inner.height as usize;
        let mut lines: Vec<Line> = Vec::new();
        let ended = model.output.ended.as_ref().map(|reason| {
            Line::from(Span::styled(
                format!("({reason})"),
                self.style(Color::DarkGray).add_modifier(Modifier::ITALIC),
            ))
        });
        let keep = room.saturating_sub(usize::from(ended.is_some()));
        let skip = model.output.lines.len().saturating_sub(keep);
        for (stderr, text) in model.output.lines.iter().skip(skip) {
            let style = if *stderr {
                self.style(Color::Red)
            } else {
                Style::new()
            };
            lines.push(Line::from(Span::styled(text.clone(), style)));
        }
        lines.extend(ended);
        frame.render_widget(Paragraph::new(lines), inner);
    }

    fn footer(&self, frame: &mut Frame, model: &Model, area: Rect, now: Instant) {
        let line = match &model.mode {
            Mode::Confirm(node) => Line::from(Span::styled(
                format!("destroy node '{node}'? y destroys it, any other key keeps it"),
                self.style(Color::Yellow).add_modifier(Modifier::BOLD),
            )),
            Mode::Filter { .. } => Line::from(vec![
                Span::styled(
                    format!("/{}", model.filter),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw("_   Enter keeps the filter, Esc cancels"),
            ]),
            Mode::Normal => match model.message(now) {
                Some(message) => Line::from(message.to_string()),
                None => {
                    let mut text =
                        "q quit  up/down/j/k select  Enter output  r restart  d destroy  / filter"
                            .to_string();
                    if !model.filter.is_empty() {
                        text = format!("[filter: {}]  {text}", model.filter);
                    }
                    Line::from(Span::styled(text, self.style(Color::DarkGray)))
                }
            },
        };
        frame.render_widget(Paragraph::new(line), area);
    }
}

/// `512K`, `12.3M`, `1.5G`: a size in bytes for a narrow column.
fn bytes(value: i64) -> String {
    let value = value.max(0) as f64;
    let units = [
        ("G", 1024.0 * 1024.0 * 1024.0),
        ("M", 1024.0 * 1024.0),
        ("K", 1024.0),
    ];
    for (unit, size) in units {
        if value >= size {
            let scaled = value / size;
            return if scaled >= 100.0 {
                format!("{scaled:.0}{unit}")
            } else {
                format!("{scaled:.1}{unit}")
            };
        }
    }
    format!("{value:.0}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Event, EventKind};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn model() -> Model {
        let mut model = Model::new("/run/rhai-supervisor.sock".into());
        model.set_status(
            &json!({"nodes": {
                "db": {"state": "running", "pid": 4242, "restarts": 0, "uptime": 65.0, "health": "ok"},
                "web": {"state": "reviving", "restarts": 3, "exit": {"code": 1}},
                "worker-with-a-long-name": {"state": "failed", "restarts": 5, "exit": {"signal": 9},
                           "health": "failing (3/3): no"},
            }}),
            Instant::now(),
        );
        model
    }

    fn screen(model: &mut Model, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let mut view = View::new(false);
        terminal
            .draw(|frame| view.draw(frame, model, Instant::now()))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn at_80x24_every_column_is_shown() {
        let mut model = model();
        let lines = screen(&mut model, 80, 24);
        assert_eq!(
            lines[0],
            "rhai-supervisor top  3 nodes: 1 running, 1 reviving, 1 failed  /run/rhai-supervi",
            "a long target is cut at the edge"
        );
        for header in [
            "NODE",
            "STATE",
            "PID",
            "UPTIME",
            "CPU%",
            "MEM",
            "RESTARTS",
            "HEALTH",
            "LAST EXIT",
        ] {
            assert!(lines[1].contains(header), "{header} in {:?}", lines[1]);
        }
        assert!(lines[2].starts_with("> db"), "{}", lines[2]);
        assert!(
            lines[2].contains("running") && lines[2].contains("4242") && lines[2].contains("1m05s"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("reviving") && lines[3].contains("code 1"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains("fail 3/3") && lines[4].contains("SIGKILL"),
            "{}",
            lines[4]
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("output: Enter follows the selected node"))
        );
        assert!(lines[23].starts_with("q quit"), "{}", lines[23]);
    }

    #[test]
    fn narrower_terminals_lose_the_least_needed_columns_and_tiny_ones_get_a_message() {
        let mut small = model();
        let mut model = model();
        let mut terminal = Terminal::new(TestBackend::new(80, 6)).unwrap();
        let mut view = View::new(false);
        small.key(super::super::model::Key::End, Instant::now());
        terminal
            .draw(|frame| view.draw(frame, &mut small, Instant::now()))
            .unwrap();
        assert_eq!(view.shown, Vec::<String>::new(), "too small: nothing shown");
        let mut terminal = Terminal::new(TestBackend::new(80, 14)).unwrap();
        terminal
            .draw(|frame| view.draw(frame, &mut small, Instant::now()))
            .unwrap();
        assert_eq!(
            view.shown,
            ["db", "web", "worker-with-a-long-name"],
            "the rows in sight"
        );
        let lines = screen(&mut model, 60, 20);
        assert!(
            lines[1].contains("CPU%") && !lines[1].contains("LAST EXIT"),
            "{}",
            lines[1]
        );
        let lines = screen(&mut model, 40, 10);
        assert_eq!(lines[0], "terminal too small: 40x10");
        assert_eq!(lines[1], "rhai-supervisor top needs at least 50x12");
    }

    #[test]
    fn prompts_messages_and_the_output_pane() {
        let mut model = model();
        let now = Instant::now();
        model.key(super::super::model::Key::Char('d'), now);
        let lines = screen(&mut model, 80, 24);
        assert_eq!(
            lines[23],
            "destroy node 'db'? y destroys it, any other key keeps it"
        );
        model.key(super::super::model::Key::Char('n'), now);
        let generation = model.follow("db");
        model.output_lines(
            generation,
            vec![(false, "listening".into()), (true, "slow query".into())],
        );
        model.output_ended(generation, "node 'db' was destroyed".into());
        let mut destroyed = Event::new(EventKind::Destroyed, Some("db"));
        destroyed.state = None;
        model.event(&destroyed, now);
        let lines = screen(&mut model, 80, 24);
        let title = lines
            .iter()
            .position(|l| l.contains("output of db"))
            .unwrap();
        assert_eq!(lines[title + 1], "listening");
        assert_eq!(lines[title + 2], "slow query");
        assert_eq!(lines[title + 3], "(node 'db' was destroyed)");
        assert_eq!(lines[23], "node 'db' is left as it is");
        model.filter = "zzz".into();
        let lines = screen(&mut model, 80, 24);
        assert!(lines[2].contains("no node matches 'zzz'"), "{}", lines[2]);
    }

    #[test]
    fn sizes_fit_their_column() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(2048), "2.0K");
        assert_eq!(bytes(12_900_000), "12.3M");
        assert_eq!(bytes(300 * 1024 * 1024), "300M");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
