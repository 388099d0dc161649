//! Gateway API's weighted `backendRefs`: each request goes to one of a
//! rule's backends, in proportion to their weights. A choice, like the
//! canary's, made by a request filter; the pipeline then sends to it and
//! counts the request in its backend's metrics.

use std::sync::Arc;

use super::Backend;
use crate::telemetry::requests::RequestMetrics;

/// One backend of a rule and its share.
#[derive(Debug)]
pub struct WeightedBackend {
    pub weight: u32,
    pub backend: Arc<Backend>,
    pub metrics: Arc<RequestMetrics>,
}

/// A rule's backends with weight (none of them 0).
#[derive(Debug)]
pub struct WeightedBackends {
    choices: Vec<WeightedBackend>,
    total: u64,
}

impl WeightedBackends {
    /// `None` unless there are two or more with weight.
    pub fn new(choices: Vec<WeightedBackend>) -> Option<WeightedBackends> {
        let choices: Vec<WeightedBackend> = choices.into_iter().filter(|c| c.weight > 0).collect();
        let total = choices.iter().map(|c| u64::from(c.weight)).sum();
        (choices.len() > 1).then_some(WeightedBackends { choices, total })
    }

    /// The backend for a roll in `0..total` (the caller's randomness).
    pub fn pick(&self, roll: u64) -> &WeightedBackend {
        let mut left = roll % self.total.max(1);
        for choice in &self.choices {
            let weight = u64::from(choice.weight);
            if left < weight {
                return choice;
            }
            left -= weight;
        }
        &self.choices[0]
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn choices(&self) -> &[WeightedBackend] {
        &self.choices
    }
}
