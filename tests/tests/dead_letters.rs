//! Events a plugin sends where no stage reads are dead-lettered, not dropped.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::*;

#[test]
fn events_on_an_unread_default_output_become_dead_letters() {
    // The router declares only `alerts` and has no default route: cold readings leave
    // on its default output, which nothing reads.
    let stages = format!(
        r#"
[plugins.router]
path = "{router}"
[transforms.route]
type = "wasm"
plugin = "router"
inputs = ["ingest"]
routes = ["alerts"]
config = {{ routes = [{{ name = "alerts", when = {{ field = "t", gt = 80 }} }}] }}
[sinks.alerts]
type = "file"
inputs = ["route.alerts"]
path = "alerts"
"#,
        router = plugin("router")
    );
    let pipeline = HttpPipeline::start("", &stages, Stdio::null());
    let (status, _) = pipeline.post(
        "/ingest",
        &[],
        b"{\"t\":90,\"seq\":1}\n{\"t\":20,\"seq\":2}\n",
    );
    assert_eq!(status, 200, "{}", pipeline.host.log_text());
    let dead_dir = pipeline.data("dead_letter");
    wait_until(Duration::from_secs(10), "the dead letter", || {
        !read_lines(&dead_dir).is_empty()
    });
    let dead = read_lines(&dead_dir);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0]["reason"],
        "stage `route` emitted on its default output, which no stage reads"
    );
    assert_eq!(dead[0]["payload"], "{\"t\":20,\"seq\":2}");
    assert_eq!(
        seq_counts(&read_lines(&pipeline.data("alerts")))
            .keys()
            .collect::<Vec<_>>(),
        [&1]
    );
}
