//! The JSON Schema of `.github/conveyor.yml`, for editors and CI: `conveyor schema` prints
//! it, and `schema/conveyor.schema.json` is its committed copy.

use schemars::generate::SchemaSettings;

use super::definition;

/// Names the schema; editors and validators key their caches on it.
pub const SCHEMA_ID: &str = "urn:conveyor:schema:conveyor.yml";

/// The schema, generated from the parser's own types. Draft 7, which editors (the YAML
/// language server among them) understand best.
pub fn schema() -> serde_json::Value {
    let mut schema = definition::file_schema(SchemaSettings::draft07().into_generator());
    schema.insert("$id".to_owned(), SCHEMA_ID.into());
    let mut value = schema.to_value();
    // Keys in one order whatever serde_json's `preserve_order` feature says, so the
    // committed copy is stable across builds.
    value.sort_all_objects();
    value
}

/// The schema as `conveyor schema` prints it: pretty JSON, ending with a newline.
pub fn to_pretty_json() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a JSON value serializes");
    text.push('\n');
    text
}
