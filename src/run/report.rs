//! What a run says in the log about its checks and choices: every result at debug level, the
//! all-down warning when a define enters that state, and one line per changed define.

use crate::config::Config;
use crate::describe::{candidate, reason_text};
use crate::evaluate::Evaluation;
use crate::log;
use crate::model::{Choice, Health, Results, State};

/// Every check result at debug level; the all-down warning when a define enters that state
/// (every few seconds in the journal would bury it), and a line when it leaves it.
pub fn log_results(config: &Config, eval: &Evaluation, previous: &State) {
    for c in &eval.choices {
        let name = &config.variables[c.variable].name;
        let define = c.define(config);
        if log::enabled(log::Level::Debug) {
            let outcomes = &eval.results[c.variable][c.family];
            for (i, o) in outcomes.iter().enumerate() {
                let state = o
                    .as_ref()
                    .map_or("not checked (decided earlier)".to_string(), |h| {
                        h.to_string()
                    });
                log::debug(&format!("{define}: {} {state}", candidate(config, c, i)));
            }
        }
        let was = previous
            .variables
            .get(name)
            .is_some_and(|v| v.family(c.family).all_down);
        match (was, c.all_down()) {
            (false, true) => log::warn(&format!("{define}: {}", reason_text(config, c))),
            (true, true) => log::debug(&format!("{define}: still {}", reason_text(config, c))),
            (true, false) => log::info(&format!(
                "{define}: no longer all down: {}",
                reason_text(config, c)
            )),
            (false, false) => {}
        }
    }
}

/// The results that came in after the choices were made, at debug level like the others.
pub fn log_late(config: &Config, choices: &[Choice], early: &Results, all: &Results) {
    if !log::enabled(log::Level::Debug) {
        return;
    }
    for c in choices {
        let (early, all) = (&early[c.variable][c.family], &all[c.variable][c.family]);
        for (i, h) in all.iter().enumerate() {
            if let (None, Some(h)) = (&early[i], h) {
                let define = c.define(config);
                log::debug(&format!(
                    "{define}: {} {h} (after the choice)",
                    candidate(config, c, i)
                ));
            }
        }
    }
}

/// One line per changed define: `NAME_v4: OLD -> NEW (why the preferred candidate lost)`.
pub fn log_changes(config: &Config, results: &Results, choices: &[Choice]) {
    for c in choices {
        let define = c.define(config);
        let before = c.effective.as_deref().unwrap_or("(none)");
        if before == c.rendered {
            continue;
        }
        let outcomes = &results[c.variable][c.family];
        // The candidates ahead of the pick that were seen down this run.
        let ahead = if c.all_down() {
            outcomes.len()
        } else {
            c.index.unwrap_or(0)
        };
        let down: Vec<(usize, &Health)> = outcomes[..ahead.min(outcomes.len())]
            .iter()
            .enumerate()
            .filter_map(|(j, o)| o.as_ref().filter(|h| !h.is_up()).map(|h| (j, h)))
            .collect();
        let why = match (&c.reason, down.is_empty()) {
            (None, _) => "no addresses configured".to_string(),
            (_, false) => listed(&down, |(j, h)| format!("{} {h}", candidate(config, c, *j))),
            (Some(_), true) => reason_text(config, c),
        };
        log::info(&format!("{define}: {before} -> {} ({why})", c.rendered));
    }
}

/// The most items one log line lists: journald cuts lines at 48 KiB, and a reader stops long
/// before that.
const LISTED: usize = 20;

/// `items` joined with commas, at most [`LISTED`] of them and then `… and N more`.
fn listed<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let mut out: Vec<String> = items.iter().take(LISTED).map(show).collect();
    if items.len() > LISTED {
        out.push(format!("… and {} more", items.len() - LISTED));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_in_a_log_line_stops_at_twenty() {
        let items: Vec<u32> = (0..50_000).collect();
        let line = listed(&items, u32::to_string);
        assert!(line.starts_with("0, 1, 2,"), "{line}");
        assert!(line.ends_with("19, … and 49980 more"), "{line}");
        assert_eq!(listed(&items[..3], u32::to_string), "0, 1, 2");
    }
}
