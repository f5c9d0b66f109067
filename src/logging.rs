//! Where logs go and how they look: text by default, or with `CONVEYOR_LOG_FORMAT=json` one
//! JSON object per line whose top level holds the event's fields and those of every span it
//! happened in (`delivery_id`, `task_id`, `run_id`, `repository`, …), so that a log system
//! finds a run's lines by a field rather than by parsing text.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The subscriber logging in `format` to `writer`, filtered by `filter`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .finish(),
        ),
    }
}

/// One event as one JSON object: `ts`, `level`, `target`, the fields of its spans from the
/// outermost in, then its own (`message` among them); an inner field wins over an outer one.
struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("ts".to_owned(), ts.into());
        line.insert("level".to_owned(), metadata.level().as_str().into());
        line.insert("target".to_owned(), metadata.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Puts each field of an event into the line, numbers and booleans as JSON ones.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat) -> String {
        let kept = Kept::default();
        let writer = kept.clone();
        let subscriber = subscriber(format, EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let delivery =
                tracing::info_span!("delivery", delivery_id = "d-1", repository = "acme/widgets");
            let _delivery = delivery.enter();
            let task = tracing::info_span!(
                "task",
                task_id = 7_i64,
                correlation_id = Some("d-1"),
                run_id = tracing::field::Empty
            );
            let _task = task.enter();
            task.record("run_id", 12_i64);
            tracing::info!(step = "build", exit_code = 0, ok = true, "step finished");
            tracing::debug!("not at this level");
        });
        String::from_utf8(kept.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_the_ids_of_every_span_at_their_top_level() {
        let text = logged(LogFormat::Json);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "step finished");
        assert_eq!(line["delivery_id"], "d-1");
        assert_eq!(line["repository"], "acme/widgets");
        assert_eq!(line["task_id"], 7);
        assert_eq!(line["correlation_id"], "d-1");
        assert_eq!(line["run_id"], 12);
        assert_eq!(line["step"], "build");
        assert_eq!(line["exit_code"], 0);
        assert_eq!(line["ok"], true);
        assert!(
            chrono::DateTime::parse_from_rfc3339(line["ts"].as_str().unwrap()).is_ok(),
            "{line}"
        );
    }

    #[test]
    fn text_stays_text() {
        let text = logged(LogFormat::Text);
        assert!(text.contains("step finished"), "{text}");
        assert!(text.contains("task_id"), "{text}");
        assert!(serde_json::from_str::<Value>(text.lines().next().unwrap()).is_err());
    }
}
