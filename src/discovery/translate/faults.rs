//! Where a build's problems become warnings: the config file's ingress-nginx
//! keys, and a panic that one object's content reaches, which costs that
//! object and not the table.

use std::sync::Arc;

use super::Builder;
use crate::config::ForeignKey;
use crate::discovery::{ObjectRef, Warning};

/// Warnings for the config file's ingress-nginx keys that sluice does not
/// honour; the 403 body every route answers with when one fails closed.
pub(super) fn config_key_warnings(
    keys: &[ForeignKey],
    warnings: &mut Vec<Warning>,
) -> Option<Arc<str>> {
    let mut deny = None;
    for key in keys {
        let (reason, message) = if key.fails_closed {
            deny.get_or_insert_with(|| {
                format!("403 Forbidden: the config sets {}, which sluice does not support and which grants or restricts access; denied\n", key.key)
            });
            ("fail-closed", format!("{} grants or restricts access and is not supported ({}); every route answers 403 until it is removed", key.key, key.note))
        } else if key.status == "unsupported" {
            (
                "unsupported-config-key",
                format!("{} is not supported ({}); ignored", key.key, key.note),
            )
        } else {
            continue;
        };
        warnings.push(Warning {
            file: None,
            object: None,
            field: Some(format!("config {}", key.key)),
            reason,
            message,
        });
    }
    deny.map(Into::into)
}

/// Runs one object's part of a build; if it panics (a bug only that object's
/// content reaches), the object gets an `internal-error` warning and `None`.
pub(super) fn isolated<T>(
    object: &ObjectRef,
    warnings: &mut Vec<Warning>,
    work: impl FnOnce() -> T,
) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(done) => Some(done),
        Err(panic) => {
            warnings.push(internal_error(object, panic.as_ref()));
            None
        }
    }
}

/// `isolated` for adding an object to the table being built. What it added
/// before failing stays: each route is whole, and the rest of the table is not
/// touched.
pub(super) fn add_isolated(
    builder: &mut Builder<'_>,
    object: &ObjectRef,
    add: impl FnOnce(&mut Builder<'_>),
) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| add(&mut *builder)));
    if let Err(panic) = result {
        builder
            .warnings
            .push(internal_error(object, panic.as_ref()));
    }
}

fn internal_error(object: &ObjectRef, panic: &(dyn std::any::Any + Send)) -> Warning {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic");
    Warning {
        file: None,
        object: Some(object.clone()),
        field: None,
        reason: "internal-error",
        message: format!("sluice failed on this object ({what}); skipped, please report it"),
    }
}
