//! One variable's problem never freezes the others. When the firewall refuses an include with
//! several changes (the staged check, the main config or the reload fails), the changes are
//! applied again in halves, each variable the firewall refuses held at its value in effect, so
//! that every other variable still fails over in this run. Each attempt is a complete apply
//! with its own rollback, so the last applied include stays recoverable throughout.

use super::{apply_change, read_record};
use crate::command::Runner;
use crate::config::Config;
use crate::model::Choice;
use crate::{files, render, select};

use crate::options::Options;

/// What applying the changes apart did.
pub struct Apart {
    /// How many variables were tried apart (none if fewer than two could be).
    pub tried: usize,
    /// The variables the firewall refused, with the reason; they keep their values in effect.
    pub refused: Vec<(usize, anyhow::Error)>,
}

/// Applies the changes of `choices` that the firewall takes, holding back the variables it
/// refuses. Call it after an apply of every change failed. A variable rendered for the first
/// time has nothing to be held at, so it goes with every attempt; only variables with values in
/// effect are tried apart.
pub fn apply_apart(opts: &Options, runner: &Runner, config: &Config, choices: &[Choice]) -> Apart {
    let changed: Vec<usize> = select::changed_variables(choices)
        .into_iter()
        .filter(|&v| select::can_hold_back(choices, v))
        .collect();
    if changed.len() < 2 {
        return Apart {
            tried: 0,
            refused: Vec::new(),
        };
    }
    crate::log::warn(&format!(
        "applying the changes of {} variables apart, so that a change the firewall refuses holds back no other",
        changed.len()
    ));
    let refused = select::settle(&changed, |accepted| {
        let held: Vec<usize> = changed
            .iter()
            .filter(|v| !accepted.contains(v))
            .copied()
            .collect();
        let trial = select::hold_back(choices, &held);
        let text = render::include(config, &trial);
        let objects = render::live::objects(config, &trial);
        // What is in effect now: an earlier attempt of this run may have applied a part.
        let on_disk = files::read_include(&opts.output)?;
        let record = read_record(&opts.output)?;
        apply_change(opts, runner, &text, on_disk.as_deref(), record, &objects).map(|_| ())
    });
    Apart {
        tried: changed.len(),
        refused,
    }
}
