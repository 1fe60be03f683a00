//! The OpenAPI document (`src/api/http/openapi.json`, served at `GET /openapi.json`) cannot drift from the code.
//!
//! - Its path set equals the `resource(..)` patterns registered in `src/api/http/mod.rs`, read from the source
//!   file itself (so a new resource without a spec entry, or a spec path without a resource, fails here; no
//!   hand-kept route list can go stale).
//! - A real server routes every (path, method) of the spec (no "no route" 404, no 405), and the status it gives
//!   to a plain probe is one the spec documents.
//! - Every other method on every path gets 405 with an `Allow` header listing exactly the spec's methods.
//! - The document is structurally valid OpenAPI 3.1 (the required fields, resolvable `$ref`s, declared path
//!   parameters, unique operation ids), its error schema lists exactly the codes of `src/error.rs`, and every
//!   response declares `X-Request-Id` (and `WWW-Authenticate` on 401, `Retry-After` on 503).
//!   `scripts/fuzz-api.sh` validates it again with openapi-spec-validator and fuzzes it with schemathesis.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{client, temp_dir, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use shale::api::http::openapi::SPEC;
use shale::Config;

/// The source of the route table.
const ROUTES_SOURCE: &str = include_str!("../src/api/http/mod.rs");
/// The source of the error codes.
const ERRORS_SOURCE: &str = include_str!("../src/error.rs");

/// Methods an OpenAPI path item may hold, and that we probe.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn spec() -> Value {
    serde_json::from_str(SPEC).expect("src/api/http/openapi.json is valid JSON")
}

/// `{key:.*}` -> `{key}`: actix's regex suffix is not part of an OpenAPI template.
fn normalize(pattern: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    let mut skipping = false;
    for c in pattern.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push(c);
            }
            '}' if in_param => {
                in_param = false;
                skipping = false;
                out.push(c);
            }
            ':' if in_param => skipping = true,
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every pattern passed to `resource(..)` (the named-resource helper of `src/api/http/mod.rs`) or `web::resource(..)`
/// in the source: a string literal, or an array of them. Calls with a non-literal argument (the helper's own body)
/// are not registrations and are skipped.
fn registered_routes(source: &str) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find("resource(") {
        rest = &rest[i + "resource(".len()..];
        if !rest.starts_with('"') && !rest.starts_with('[') {
            continue;
        }
        // The argument ends at the first ')' outside a string literal.
        let mut in_str = false;
        let mut end = None;
        for (j, c) in rest.char_indices() {
            match c {
                '"' => in_str = !in_str,
                ')' if !in_str => {
                    end = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let arg = &rest[..end.expect("web::resource( is closed")];
        let literals: Vec<&str> = arg.split('"').skip(1).step_by(2).collect();
        assert!(!literals.is_empty(), "web::resource({arg}) does not name its pattern with a string literal");
        routes.extend(literals.iter().map(|p| normalize(p)));
    }
    routes
}

fn spec_paths(spec: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let paths = spec["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("a path item is an object")
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// Resolves a local `$ref` (`#/components/...`), following chains.
fn resolve<'a>(spec: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else { return v };
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = spec.pointer(pointer).unwrap_or_else(|| panic!("$ref {r} does not resolve"));
    }
    panic!("$ref chain too long")
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => collect_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

#[test]
fn the_spec_paths_are_exactly_the_registered_routes() {
    let routes = registered_routes(ROUTES_SOURCE);
    assert!(routes.len() >= 10, "parsed too few routes from src/api/http/mod.rs: {routes:?}");
    assert!(routes.contains("/kv/{key}"), "the regex suffix of /kv/{{key:.*}} is normalised: {routes:?}");
    let spec = spec();
    let documented: BTreeSet<String> = spec_paths(&spec).into_keys().collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(missing.is_empty(), "routes in src/api/http/mod.rs missing from openapi.json: {missing:?}");
    assert!(extra.is_empty(), "paths in openapi.json with no route in src/api/http/mod.rs: {extra:?}");
}

#[test]
fn the_route_parser_sees_what_it_must() {
    let src = r#"cfg.service(web::resource("/a").route(x)).service(web::resource(["/b/{n}", "/c/{k:.*}"]).route(y))"#;
    let expected: BTreeSet<String> = ["/a", "/b/{n}", "/c/{k}"].iter().map(|s| s.to_string()).collect();
    assert_eq!(registered_routes(src), expected);
}

#[test]
fn the_spec_is_structurally_valid_openapi_3_1() {
    let spec = spec();
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "openapi: {}", spec["openapi"]);
    assert!(spec["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"), "info.version follows Cargo.toml");
    let schemes = spec["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["bearerAuth"]["type"], "http");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");

    // Every $ref resolves.
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(refs.len() > 20);
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(spec.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }

    let mut operation_ids = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        assert!(path.starts_with('/'), "path {path} must start with /");
        let templated: BTreeSet<String> =
            path.split('{').skip(1).map(|s| s.split('}').next().expect("closed brace").to_string()).collect();
        let path_level = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        for (method, op) in item.as_object().expect("path item").iter().filter(|(k, _)| METHODS.contains(&k.as_str())) {
            let label = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{label}: operationId"));
            assert!(operation_ids.insert(id.to_string()), "{label}: duplicate operationId {id}");
            // Path parameters: exactly the template's, each required.
            let op_level = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut declared = BTreeSet::new();
            for p in path_level.iter().chain(&op_level) {
                let p = resolve(&spec, p);
                let name = p["name"].as_str().unwrap_or_else(|| panic!("{label}: parameter without a name"));
                let location = p["in"].as_str().unwrap_or_else(|| panic!("{label}: parameter {name} without `in`"));
                assert!(["path", "query", "header", "cookie"].contains(&location), "{label}: {name} in {location}");
                assert!(p.get("schema").is_some() || p.get("content").is_some(), "{label}: {name} has no schema");
                if location == "path" {
                    assert_eq!(p["required"], true, "{label}: path parameter {name} must be required");
                    declared.insert(name.to_string());
                }
            }
            assert_eq!(declared, templated, "{label}: declared path parameters vs the template");
            if let Some(body) = op.get("requestBody") {
                let body = resolve(&spec, body);
                assert!(body["content"].as_object().is_some_and(|c| !c.is_empty()), "{label}: requestBody content");
            }
            // Responses: at least one 2xx, each with a description and X-Request-Id; errors carry the Error body.
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{label}: responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{label}: no 2xx response");
            for (status, response) in responses {
                let code: u16 = status.parse().unwrap_or_else(|_| panic!("{label}: status {status} is not a number"));
                let response = resolve(&spec, response);
                assert!(response["description"].is_string(), "{label} {status}: description");
                let headers = response["headers"].as_object().unwrap_or_else(|| panic!("{label} {status}: headers"));
                assert!(headers.contains_key("X-Request-Id"), "{label} {status}: X-Request-Id");
                if code == 401 {
                    assert!(headers.contains_key("WWW-Authenticate"), "{label} 401: WWW-Authenticate");
                }
                if code == 503 {
                    assert!(headers.contains_key("Retry-After"), "{label} 503: Retry-After");
                }
                let error_body = &response["content"]["application/json"]["schema"]["$ref"];
                let is_error = code >= 400 && !(path == "/readyz" && code == 503);
                if is_error && method != "head" {
                    assert_eq!(error_body, "#/components/schemas/Error", "{label} {status}: the JSON error body");
                }
                if method == "head" || code == 204 || code == 304 {
                    assert!(response.get("content").is_none(), "{label} {status}: has no body");
                }
            }
            // Secured unless it says otherwise; only /healthz and /readyz are open.
            let open = op.get("security").and_then(Value::as_array).is_some_and(|s| s.is_empty());
            assert_eq!(open, path == "/healthz" || path == "/readyz", "{label}: security");
            if !open {
                assert!(responses.contains_key("401"), "{label}: a secured operation documents 401");
            }
            let writes = !matches!(method.as_str(), "get" | "head");
            if writes {
                assert!(responses.contains_key("403"), "{label}: a write documents 403 for read-only tokens");
            }
        }
    }
    assert!(operation_ids.len() >= 17, "operations: {operation_ids:?}");

    // Every link names an existing operation and only parameters that operation declares.
    let mut links = 0;
    for item in spec["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values().filter(|op| op.get("responses").is_some()) {
            for response in op["responses"].as_object().expect("responses").values() {
                let response = resolve(&spec, response);
                for (name, link) in response.get("links").and_then(Value::as_object).into_iter().flatten() {
                    links += 1;
                    let link = resolve(&spec, link);
                    let target = link["operationId"].as_str().unwrap_or_else(|| panic!("link {name}: operationId"));
                    assert!(operation_ids.contains(target), "link {name} names unknown operation {target}");
                    let (path, item) = spec["paths"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .find(|(_, item)| item.as_object().unwrap().values().any(|o| o["operationId"] == target))
                        .unwrap();
                    let op = item.as_object().unwrap().values().find(|o| o["operationId"] == target).unwrap();
                    let declared: BTreeSet<&str> = item
                        .get("parameters")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .chain(op.get("parameters").and_then(Value::as_array).into_iter().flatten())
                        .map(|p| resolve(&spec, p)["name"].as_str().unwrap())
                        .collect();
                    for param in link["parameters"].as_object().into_iter().flatten().map(|(k, _)| k.as_str()) {
                        assert!(declared.contains(param), "link {name}: {target} ({path}) has no parameter {param}");
                    }
                }
            }
        }
    }
    assert!(links >= 4, "links: {links}");
}

#[test]
fn the_error_codes_are_those_of_src_error_rs() {
    // `Error::Variant(_) => "code",` lines of `Error::code`.
    let from_source: BTreeSet<String> = ERRORS_SOURCE
        .lines()
        .filter(|l| l.trim_start().starts_with("Error::") && l.contains("(_) => \""))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_string)
        .collect();
    assert!(from_source.len() >= 11, "parsed codes: {from_source:?}");
    let spec = spec();
    let documented: BTreeSet<String> = spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .expect("the Error schema enumerates its codes")
        .iter()
        .map(|c| c.as_str().expect("codes are strings").to_string())
        .collect();
    assert_eq!(documented, from_source);
    assert_eq!(spec["components"]["schemas"]["Error"]["required"], serde_json::json!(["error", "message"]));
}

/// A concrete URL path for a templated one.
fn concrete(path: &str) -> String {
    path.replace("{key}", "openapi/probe").replace("{name}", "openapi-probe")
}

/// A body that reaches the handler without side effects outside the data dir.
fn probe_body(path: &str, method: &str) -> &'static str {
    match (path, method) {
        // A relative path is refused (400) before anything is written.
        ("/admin/backup", "post") => r#"{"path": "relative/dir"}"#,
        ("/api", "post") => r#"{"id": null, "data": {"probe": true}}"#,
        ("/api/cmd", "post") => r#"{"id": 1, "cmd": {"query": "ONLY", "keys": ["probe"]}}"#,
        ("/counter/{name}", "post") => "1",
        _ => "",
    }
}

fn is_no_route(status: StatusCode, body: &str) -> bool {
    status == StatusCode::NOT_FOUND && body.contains("no route for")
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_every_other_method_gets_405() {
    let dir = temp_dir();
    let server = TestServer::start(Config::for_test(dir.path()));
    let http = client();
    let spec = spec();

    // The probe can tell "no route" apart.
    let res = http.get(server.url("/no/such/route")).send().await.unwrap();
    let (status, body) = (res.status(), res.text().await.unwrap());
    assert!(is_no_route(status, &body), "{status} {body}");

    for (path, methods) in spec_paths(&spec) {
        let url = server.url(&concrete(&path));
        for method in METHODS {
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = http.request(verb.clone(), &url).body(probe_body(&path, method)).send().await.unwrap();
            let status = res.status();
            let allow = res.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
            assert!(res.headers().contains_key("x-request-id"), "{method} {path}: X-Request-Id");
            let body = res.text().await.unwrap();
            if methods.contains(method) {
                assert!(!is_no_route(status, &body), "{method} {path}: documented but not routed: {body}");
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: documented but 405: {body}");
                let documented = &spec["paths"][&path][method]["responses"];
                assert!(
                    documented.get(status.as_str()).is_some(),
                    "{method} {path}: status {status} is not documented ({body})"
                );
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: undocumented method: {body}");
                let allow = allow.unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"));
                let allowed: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_lowercase()).collect();
                assert_eq!(&allowed, &methods, "{method} {path}: Allow");
                if method != "head" {
                    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                    assert_eq!(v["error"], "method_not_allowed");
                }
            }
        }
    }
    server.stop();
}

#[tokio::test]
async fn get_openapi_json_serves_the_document() {
    let dir = temp_dir();
    let server = TestServer::start(Config::for_test(dir.path()));
    let res = client().get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let served: Value = res.json().await.unwrap();
    assert_eq!(served, spec());
    server.stop();
}
