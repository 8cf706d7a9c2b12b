//! `type = "replay"`: a replay pipeline (a config whose sources include `type =
//! "replay"`) run over the slot's objects — yesterday's telemetry scored again with
//! today's model, into a table or a new set of objects.
//!
//! ```toml
//! [jobs.rescore]
//! type = "replay"
//! config = "rescore.toml"     # relative to this config's directory
//! schedule = "0 2 * * *"
//! # from = "{slot_start}", to = "{slot_end}" (the defaults); prefix = "dt={slot_date}"
//! ```
//!
//! Every replay source of that config reads `[from, to)` (and only objects under
//! `prefix`, when set), as `sluice replay --from --to --prefix` would; `{slot_start}`,
//! `{slot_end}`, `{slot_date}` and `{slot_ms}` name the run's slot. The pipeline runs in
//! the host's process beside its own, writing into the host's serving tables of the
//! same names. The run fails if an object could not be read or an event was not taken
//! by every sink. It produced, as `objects`, the objects *read*, and as `rows`, the
//! events every sink took.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{CheckContext, JobError, JobKind, Produced, RunContext};
use crate::component::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayJob {
    /// The replay pipeline's config file, relative to this config's directory.
    pub config: PathBuf,
    /// Start of the time range (inclusive), slot placeholders expanded.
    #[serde(default = "slot_start")]
    pub from: String,
    /// End of the time range (exclusive), slot placeholders expanded.
    #[serde(default = "slot_end")]
    pub to: String,
    /// Only objects under this path (`dt={slot_date}`); the sources' own otherwise.
    #[serde(default)]
    pub prefix: Option<String>,
}

fn slot_start() -> String {
    "{slot_start}".to_owned()
}

fn slot_end() -> String {
    "{slot_end}".to_owned()
}

impl JobKind for ReplayJob {
    /// Only that the file is there: loading it is the runner's (configs are a layer
    /// above the kinds), and a run reports what is wrong in it, with its lines.
    fn problems(&self, context: &CheckContext<'_>) -> Vec<Problem> {
        let path = context.base.join(&self.config);
        if path.is_file() {
            return Vec::new();
        }
        vec![Problem {
            message: format!("`config` {} is not a file", path.display()),
            hint: "the replay pipeline's config, relative to this config file's directory".into(),
        }]
    }

    fn run(self: Arc<Self>, run: RunContext) -> BoxFuture<'static, Result<Produced, JobError>> {
        let from = run.slot.expand(&self.from);
        let to = run.slot.expand(&self.to);
        let prefix = self.prefix.as_deref().map(|prefix| run.slot.expand(prefix));
        run.log.line(format!(
            "replaying {} from {from} to {to}{}",
            self.config.display(),
            prefix.as_deref().map(|p| format!(" under {p}")).unwrap_or_default()
        ));
        run.pipelines.replay(
            &run.path(&self.config),
            from,
            to,
            prefix,
            run.log.clone(),
            run.cancel.clone(),
        )
    }
}
