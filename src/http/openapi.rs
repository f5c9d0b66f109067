//! The OpenAPI 3.1 description of the HTTP surface, made while the router is: every route is
//! added through [`Documented`], which registers the handler and describes it in one call,
//! so no route can be served undocumented. Bodies, query strings and answers are described
//! by the JSON Schemas of the handlers' own types (schemars), which OpenAPI 3.1 takes as they
//! are (JSON Schema 2020-12).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// How a route is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Open to anyone (health, metrics).
    Open,
    /// `Authorization: Bearer` with the operator token.
    Token,
    /// GitHub's `X-Hub-Signature-256`.
    Signature,
}

/// One operation, as the document describes it.
pub struct Operation {
    summary: &'static str,
    guard: Guard,
    /// The body's schema, and whether it may be left out.
    body: Option<(Schema, bool)>,
    query: Option<Schema>,
    answers: Vec<(u16, &'static str, Option<Schema>)>,
}

/// The router and its document, built together.
pub struct Documented<S> {
    router: Router<S>,
    paths: BTreeMap<&'static str, Map<String, Value>>,
    schemas: SchemaGenerator,
}

impl<S: Clone + Send + Sync + 'static> Documented<S> {
    pub fn new() -> Self {
        let settings = SchemaSettings::draft2020_12().with(|settings| {
            settings.definitions_path = "/components/schemas".into();
        });
        Self {
            router: Router::new(),
            paths: BTreeMap::new(),
            schemas: settings.into_generator(),
        }
    }

    /// The schema of `T`, kept once under `components/schemas`.
    pub fn schema<T: JsonSchema>(&mut self) -> Schema {
        self.schemas.subschema_for::<T>()
    }

    /// Serves `handler` for `method` at `path` and describes it.
    pub fn route(
        mut self,
        method: &'static str,
        path: &'static str,
        handler: MethodRouter<S>,
        operation: Operation,
    ) -> Self {
        self.router = self.router.route(path, handler);
        let described = operation.describe(path);
        self.paths
            .entry(path)
            .or_default()
            .insert(method.to_ascii_lowercase(), described);
        self
    }

    /// The router, serving the document at `document_path` too, and the document.
    pub fn finish(mut self, document_path: &'static str) -> (Router<S>, Value) {
        let itself = Operation::new("This document (OpenAPI 3.1)", Guard::Open)
            .answers(200, "the document", None)
            .describe(document_path);
        self.paths
            .entry(document_path)
            .or_default()
            .insert("get".to_owned(), itself);
        let paths: Map<String, Value> = self
            .paths
            .into_iter()
            .map(|(path, operations)| (path.to_owned(), Value::Object(operations)))
            .collect();
        let mut schemas = self.schemas.take_definitions(true);
        schemas.insert(
            "Error".to_owned(),
            json!({
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "description": "stable, snake_case" },
                    "message": { "type": "string" },
                },
            }),
        );
        let document = json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Conveyor",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The task engine's API, the event feed, and GitHub's webhooks.",
            },
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "operatorToken": { "type": "http", "scheme": "bearer" },
                    "githubSignature": {
                        "type": "apiKey", "in": "header", "name": "X-Hub-Signature-256",
                    },
                },
            },
        });
        let served = Arc::new(document.clone());
        let router = self.router.route(
            document_path,
            get(move || {
                let document = served.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        );
        (router, document)
    }
}

impl Operation {
    /// An operation: its summary and guard, then what it takes and answers.
    pub fn new(summary: &'static str, guard: Guard) -> Self {
        Self {
            summary,
            guard,
            body: None,
            query: None,
            answers: Vec::new(),
        }
    }

    /// A JSON body of `schema`.
    pub fn body(mut self, schema: Schema) -> Self {
        self.body = Some((schema, false));
        self
    }

    /// A JSON body of `schema` that may be left out.
    pub fn optional_body(mut self, schema: Schema) -> Self {
        self.body = Some((schema, true));
        self
    }

    /// Query parameters: the properties of `schema`, an object.
    pub fn query(mut self, schema: Schema) -> Self {
        self.query = Some(schema);
        self
    }

    /// An answer with `status`, described, with a JSON body of `schema` when given.
    pub fn answers(mut self, status: u16, what: &'static str, schema: Option<Schema>) -> Self {
        self.answers.push((status, what, schema));
        self
    }

    fn describe(self, path: &str) -> Value {
        let mut parameters: Vec<Value> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                let kind = if name == "id" || name.ends_with("_id") {
                    "integer"
                } else {
                    "string"
                };
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": kind } })
            })
            .collect();
        if let Some(query) = &self.query {
            let required: Vec<&str> = query
                .get("required")
                .and_then(Value::as_array)
                .map(|names| names.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(properties) = query.get("properties").and_then(Value::as_object) {
                for (name, schema) in properties {
                    parameters.push(json!({
                        "name": name, "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": schema,
                    }));
                }
            }
        }
        let mut responses = Map::new();
        for (status, what, schema) in self.answers {
            let mut answer = json!({ "description": what });
            if let Some(schema) = schema {
                answer["content"] = json!({ "application/json": { "schema": schema } });
            }
            responses.insert(status.to_string(), answer);
        }
        let error =
            json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } });
        responses.insert(
            "default".to_owned(),
            json!({ "description": "refused: `{code, message}`", "content": error }),
        );
        let mut operation = json!({
            "summary": self.summary,
            "parameters": parameters,
            "responses": responses,
        });
        match self.guard {
            Guard::Open => operation["security"] = json!([]),
            Guard::Token => operation["security"] = json!([{ "operatorToken": [] }]),
            Guard::Signature => operation["security"] = json!([{ "githubSignature": [] }]),
        }
        if let Some((body, optional)) = self.body {
            operation["requestBody"] = json!({
                "required": !optional,
                "content": { "application/json": { "schema": body } },
            });
        }
        operation
    }
}
