//! Warnings about Ingresses become Kubernetes `Event`s (type Warning) on the
//! Ingress, so `kubectl describe ingress` shows why a rule is not served. The
//! publisher sends each warning once, when it first appears.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tokio::sync::mpsc;

use super::Warning;

/// The longest note the events API accepts.
const MAX_NOTE: usize = 1024;

/// Records Events until the publisher goes away. With `leading`, only while it is
/// set: one replica of a fleet speaks for all, as for status.
pub async fn record(
    client: Client,
    reporter: Reporter,
    leading: Option<Arc<AtomicBool>>,
    mut warnings: mpsc::UnboundedReceiver<Warning>,
) {
    let recorder = Recorder::new(client, reporter);
    while let Some(warning) = warnings.recv().await {
        if leading.as_ref().is_some_and(|l| !l.load(Ordering::Relaxed)) {
            continue;
        }
        let Some(object) = warning.object.as_ref().filter(|o| o.kind == "Ingress") else {
            continue;
        };
        let reference = ObjectReference {
            api_version: Some("networking.k8s.io/v1".into()),
            kind: Some("Ingress".into()),
            namespace: Some(object.namespace.clone()),
            name: Some(object.name.clone()),
            ..ObjectReference::default()
        };
        let mut note = warning.to_string();
        if note.len() > MAX_NOTE {
            let mut end = MAX_NOTE;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = Event {
            type_: EventType::Warning,
            reason: pascal_case(warning.reason),
            note: Some(note),
            action: "Translate".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::debug!(%error, ingress = %object, "could not record an Event");
        }
    }
}

/// `service-not-found` -> `ServiceNotFound`, the style of Event reasons.
fn pascal_case(reason: &str) -> String {
    reason
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_in_pascal_case() {
        assert_eq!(super::pascal_case("service-not-found"), "ServiceNotFound");
        assert_eq!(super::pascal_case("conflict"), "Conflict");
    }
}
