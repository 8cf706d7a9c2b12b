//! `sluice validate` on `[jobs]`: unknown dependencies, cycles, bad schedules and time
//! zones, unknown kinds, and jobs that would never run — each at its place, with a hint.

mod common;

use std::path::Path;

use common::{errors, only, position_of};
use sluice::config::Config;
use sluice::jobs::Concurrency;

const WORKFLOW: &str = r#"
[jobs.trainset]
type = "command"
schedule = "0 2 * * *"
time_zone = "Europe/Berlin"
catchup = true
command = "true"

[jobs.train]
type = "command"
depends_on = ["trainset"]
retries = 2
retry_backoff_secs = 30
timeout_secs = 3600
concurrency = "queue"
command = "python3"
args = ["train.py", "--day", "{slot_date}"]

[jobs.compact]
type = "command"
every = "1h"
command = "true"
"#;

#[test]
fn a_workflow_loads_with_its_settings() {
    let config = Config::from_text(Path::new("pipeline.toml"), WORKFLOW, |_| None).unwrap();
    let train = &config.jobs["train"];
    assert_eq!(train.depends_on, ["trainset"]);
    assert_eq!((train.retries, train.retry_backoff.as_secs()), (2, 30));
    assert_eq!(train.timeout.map(|t| t.as_secs()), Some(3600));
    assert_eq!(train.concurrency, Concurrency::Queue);
    assert!(train.schedule.is_none());
    assert!(config.jobs["trainset"].catchup);
    assert_eq!(
        config.jobs["trainset"]
            .schedule
            .as_ref()
            .unwrap()
            .describe(),
        "0 2 * * * (Europe/Berlin)"
    );
    assert_eq!(
        config.jobs["compact"].schedule.as_ref().unwrap().describe(),
        "every 1h"
    );
}

#[test]
fn an_unknown_dependency_is_refused_at_it_with_the_closest_job() {
    let text = WORKFLOW.replace(
        r#"depends_on = ["trainset"]"#,
        r#"depends_on = ["trainst"]"#,
    );
    let errors = errors(&text);
    let (message, hint, at) = only(&errors);
    assert_eq!(message, "job `train` depends on `trainst`, which is no job");
    assert_eq!(hint.as_deref(), Some("did you mean `trainset`?"));
    assert_eq!(at, position_of(&text, r#""trainst""#));
}

#[test]
fn a_cycle_of_dependencies_is_refused() {
    let text = WORKFLOW.replace(
        "[jobs.trainset]\ntype = \"command\"\nschedule = \"0 2 * * *\"",
        "[jobs.trainset]\ntype = \"command\"\ndepends_on = [\"train\"]",
    );
    let errors = errors(&text);
    let messages: Vec<&str> = errors
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(
        messages.contains(&"jobs depend on each other in a cycle: train → trainset → train"),
        "{errors}"
    );
}

#[test]
fn a_bad_schedule_is_refused_at_the_pattern() {
    let text = WORKFLOW.replace("0 2 * * *", "0 25 * * *");
    let errors = errors(&text);
    let (message, hint, at) = only(&errors);
    assert!(
        message.starts_with("job `trainset`: `0 25 * * *` is not a cron schedule"),
        "{message}"
    );
    assert!(hint.unwrap().contains("five fields"));
    assert_eq!(at, position_of(&text, r#""0 25 * * *""#));
}

#[test]
fn an_unknown_time_zone_is_refused_at_it() {
    let text = WORKFLOW.replace("Europe/Berlin", "Europe/Atlantis");
    let errors = errors(&text);
    let (message, hint, at) = only(&errors);
    assert_eq!(
        message,
        "job `trainset`: unknown time zone `Europe/Atlantis`"
    );
    assert!(hint.unwrap().contains("IANA"));
    assert_eq!(at, position_of(&text, r#""Europe/Atlantis""#));
}

#[test]
fn a_bad_period_is_refused() {
    let text = WORKFLOW.replace(r#"every = "1h""#, r#"every = "hourly""#);
    let (message, _, at) = only(&errors(&text));
    assert!(message.contains("`hourly` is not a period"), "{message}");
    assert_eq!(at, position_of(&text, r#""hourly""#));
}

#[test]
fn an_unknown_kind_lists_the_closest() {
    let text = WORKFLOW.replace(
        "[jobs.compact]\ntype = \"command\"",
        "[jobs.compact]\ntype = \"comand\"",
    );
    let (message, hint, at) = only(&errors(&text));
    assert_eq!(message, "job `compact` has unknown type `comand`");
    assert_eq!(hint.as_deref(), Some("did you mean `command`?"));
    assert_eq!(at, position_of(&text, r#""comand""#));
}

#[test]
fn a_job_that_would_never_run_or_runs_twice_over_is_refused() {
    let never = WORKFLOW.replace("every = \"1h\"\n", "");
    let (message, hint, _) = only(&errors(&never));
    assert_eq!(
        message,
        "job `compact` has no `schedule`, `every` or `depends_on`"
    );
    assert!(hint.unwrap().contains("depends_on"));

    let both = WORKFLOW.replace(
        r#"depends_on = ["trainset"]"#,
        "depends_on = [\"trainset\"]\nevery = \"1d\"",
    );
    let (message, hint, _) = only(&errors(&both));
    assert_eq!(message, "job `train` has a schedule and `depends_on`");
    assert!(hint.unwrap().contains("runs in its upstream's slots"));

    let mixed = WORKFLOW.replace(
        r#"depends_on = ["trainset"]"#,
        r#"depends_on = ["trainset", "compact"]"#,
    );
    let (message, _, _) = only(&errors(&mixed));
    assert!(
        message.contains("depends on jobs with different schedules"),
        "{message}"
    );
}

#[test]
fn a_kind_s_own_keys_are_checked() {
    let text = WORKFLOW.replace(r#"command = "python3""#, r#"commnd = "python3""#);
    let refused = errors(&text);
    assert!(
        refused
            .diagnostics
            .iter()
            .any(|d| d.message.contains("job `train`")
                && d.message.contains("unknown field `commnd`")),
        "{refused}"
    );
    let missing = WORKFLOW.replace(
        r#"command = "python3""#,
        r#"command = "./no/such/script.py""#,
    );
    let (message, _, _) = only(&errors(&missing));
    assert!(
        message.contains("`command` ") && message.contains("is not a file"),
        "{message}"
    );
}
