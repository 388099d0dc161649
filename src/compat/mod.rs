//! Layer 0, a leaf. What sluice makes of ingress-nginx's configuration: the
//! registry of every ingress-nginx annotation and ConfigMap key with its status
//! in sluice (`registry`), and the reader of nginx snippets (`snippet`), which
//! turns a snippet into directives to interpret, never into configuration to run,
//! and nginx's text rules used in more than one place (`nginx`).
//!
//! Pure data and parsing: `discovery` (annotations), `config` (the ConfigMap),
//! the `sluice migrate` report and the migration guide all read their verdicts
//! here, so they cannot disagree. The issues that add features flip entries.

pub mod nginx;
pub mod registry;
pub mod snippet;
