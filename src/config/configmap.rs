//! An ingress-nginx ConfigMap, read as a sluice config file unchanged.
//!
//! The file may be the ConfigMap's `data`, or the whole ConfigMap manifest.
//! Before the typed config reads it, each key is sorted out:
//! * a sluice key (most share ingress-nginx's name) stays, and a quoted
//!   boolean or number (`"true"`, `"60"`, as a ConfigMap must hold them)
//!   becomes one where the key wants one;
//! * an ingress-nginx key that sluice spells otherwise is renamed (`ALIASES`),
//!   or translated (`disable-access-log`);
//! * any other ingress-nginx key is taken out and kept with its registry
//!   status (`ForeignKey`): a warning if unsupported, and every route fails
//!   closed if it grants or restricts access;
//! * a key neither knows stays, so the typed config refuses it by name.

use serde::Serialize;
use serde_yaml::{Mapping, Value};

use crate::compat::registry::{self, Status};
use crate::compat::snippet;

/// An ingress-nginx ConfigMap key with no sluice counterpart, and its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ForeignKey {
    pub key: String,
    pub status: &'static str,
    pub note: &'static str,
    /// This key makes every route answer 403: it grants or restricts access
    /// (or is a snippet holding an access directive), and sluice cannot honour it.
    pub fails_closed: bool,
    /// The value, for the keys sluice reads from here (`global-auth-*`).
    #[serde(skip)]
    pub value: String,
}

/// The mapping the typed config reads, and the ingress-nginx keys taken out.
/// `types` gives the JSON type of each sluice key's default, to know which
/// quoted values to unquote.
pub fn normalize(
    value: Value,
    types: &serde_json::Map<String, serde_json::Value>,
) -> (Value, Vec<ForeignKey>) {
    let Value::Mapping(map) = value else {
        return (value, Vec::new());
    };
    let map = data_of(map);
    let mut out = Mapping::new();
    let mut foreign = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_owned) else {
            out.insert(key, value);
            continue;
        };
        let name = registry::ALIASES
            .iter()
            .find(|(nginx, _)| *nginx == name)
            .map_or(name, |(_, ours)| (*ours).to_owned());
        if let Some(default) = types.get(&name) {
            out.insert(Value::String(name), unquote(value, default));
            continue;
        }
        if name == "disable-access-log" {
            if truthy(&value) && !out.contains_key("access-log") {
                out.insert("access-log".into(), "off".into());
            }
            continue;
        }
        let Some(known) = registry::configmap_key(&name) else {
            out.insert(Value::String(name), value);
            continue;
        };
        let access_snippet = name.ends_with("-snippet")
            && value.as_str().and_then(snippet::mentions_access).is_some();
        let fails_closed = matches!(known.status, Status::FailsClosed(_)) || access_snippet;
        let text = match &value {
            Value::String(text) => text.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        foreign.push(ForeignKey {
            value: text,
            key: name,
            status: if fails_closed {
                Status::FailsClosed("").label()
            } else {
                known.status.label()
            },
            note: known.status.note(),
            fails_closed,
        });
    }
    (Value::Mapping(out), foreign)
}

/// A config file's keys: a ConfigMap manifest's `data`, or the file itself.
pub fn data_of(mut map: Mapping) -> Mapping {
    if map.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
        return map;
    }
    match map.remove("data") {
        Some(Value::Mapping(data)) => data,
        _ => Mapping::new(),
    }
}

/// `"true"` where a boolean is wanted, `"60"` where a number is.
fn unquote(value: Value, default: &serde_json::Value) -> Value {
    let Value::String(text) = &value else {
        return value;
    };
    let text = text.trim();
    match default {
        serde_json::Value::Bool(_) => match text.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => value,
        },
        serde_json::Value::Number(_) => {
            if let Ok(n) = text.parse::<u64>() {
                Value::Number(n.into())
            } else if let Ok(n) = text.parse::<f64>() {
                Value::Number(n.into())
            } else {
                value
            }
        }
        _ => value,
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    }
}
