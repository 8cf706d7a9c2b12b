//! The results of a test run as a test runner prints them, and as JUnit XML for CI.

use std::fmt::Write as _;
use std::time::Duration;

use super::expect::Failure;

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub duration: Duration,
    /// Empty: it passed.
    pub failures: Vec<Failure>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// `test NAME ... ok (12 ms)` or `test NAME ... FAILED`.
    pub fn line(&self) -> String {
        if self.passed() {
            format!(
                "test {} ... ok ({} ms)",
                self.name,
                self.duration.as_millis()
            )
        } else {
            format!("test {} ... FAILED", self.name)
        }
    }
}

/// `running 4 tests from FILE`.
pub fn header(count: usize, from: &str) -> String {
    let tests = if count == 1 { "test" } else { "tests" };
    format!("running {count} {tests} from {from}")
}

/// The failures, each under its test's name and what failed, then the totals.
pub fn summary(results: &[TestResult]) -> String {
    let mut text = String::new();
    let failed: Vec<&TestResult> = results.iter().filter(|result| !result.passed()).collect();
    if !failed.is_empty() {
        text.push_str("failures:\n");
        for result in &failed {
            text.push_str(&failure_text(result));
        }
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    let _ = writeln!(
        text,
        "test result: {verdict}. {} passed; {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    text
}

/// A failed test's failures: `---- NAME: WHAT ----` and the indented diff of each.
fn failure_text(result: &TestResult) -> String {
    let mut text = String::new();
    for failure in &result.failures {
        let _ = writeln!(text, "---- {}: {} ----", result.name, failure.title);
        for line in &failure.lines {
            let _ = writeln!(text, "  {line}");
        }
    }
    text
}

/// JUnit XML: one suite, `suite` (the test file as given), of `results`.
pub fn junit(suite: &str, results: &[TestResult]) -> String {
    let failures = results.iter().filter(|result| !result.passed()).count();
    let time: Duration = results.iter().map(|result| result.duration).sum();
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\"",
        results.len(),
        time.as_secs_f64()
    );
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(xml, "<testsuites {counts}>");
    let _ = writeln!(xml, "  <testsuite name=\"{}\" {counts}>", escape(suite));
    for result in results {
        let open = format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&result.name),
            escape(suite),
            result.duration.as_secs_f64()
        );
        match result.failures.first() {
            None => {
                let _ = writeln!(xml, "{open}/>");
            }
            Some(first) => {
                let _ = writeln!(xml, "{open}>");
                let _ = writeln!(
                    xml,
                    "      <failure message=\"{}\">{}</failure>",
                    escape(&first.title),
                    escape(&failure_text(result))
                );
                let _ = writeln!(xml, "    </testcase>");
            }
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Text as XML character data or an attribute value: markup escaped, and the control
/// characters XML 1.0 cannot hold replaced.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\n' | '\t' | '\r' => escaped.push(c),
            c if c.is_control() => escaped.push('\u{FFFD}'),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, failures: Vec<Failure>) -> TestResult {
        TestResult {
            name: name.into(),
            duration: Duration::from_millis(12),
            failures,
        }
    }

    #[test]
    fn prints_like_a_test_runner() {
        let results = [
            result("reshaped", Vec::new()),
            result(
                "wrong",
                vec![Failure {
                    title: "shape, event 1 of 1".into(),
                    lines: vec!["field site: not expected".into()],
                }],
            ),
        ];
        assert_eq!(header(2, "x.test.toml"), "running 2 tests from x.test.toml");
        assert_eq!(results[0].line(), "test reshaped ... ok (12 ms)");
        assert_eq!(results[1].line(), "test wrong ... FAILED");
        assert_eq!(
            summary(&results),
            "failures:\n---- wrong: shape, event 1 of 1 ----\n  field site: not expected\n\
             test result: FAILED. 1 passed; 1 failed\n"
        );
    }

    #[test]
    fn junit_escapes_names_and_diffs() {
        let results = [result(
            "a <b> & \"c\"",
            vec![Failure {
                title: "x".into(),
                lines: vec!["expected: {\"k\":\"<v>\"}\u{1}".into()],
            }],
        )];
        let xml = junit("t.test.toml", &results);
        assert!(
            xml.contains("<testcase name=\"a &lt;b&gt; &amp; &quot;c&quot;\""),
            "{xml}"
        );
        assert!(
            xml.contains("{&quot;k&quot;:&quot;&lt;v&gt;&quot;}\u{FFFD}"),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuite name=\"t.test.toml\" tests=\"1\" failures=\"1\""),
            "{xml}"
        );
    }
}
