//! Bodies of the node's web API, shared by the axum backend and the Yew dashboard.

use serde::{Deserialize, Serialize};

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"roundtable"`.
    pub name: String,
    /// The server's version.
    pub version: String,
}

impl Health {
    /// The health report of this build.
    pub fn current() -> Self {
        Health {
            name: "roundtable".into(),
            version: crate::VERSION.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_has_stable_json_shape() {
        let h = Health::current();
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["name"], "roundtable");
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    }
}

/// Everything the dashboard shows changes through one of these, pushed on
/// `/ws` as JSON (`{"type": "...", ...}`) and applied by the dashboard's reducer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A training was created or changed (full current state).
    Training { training: crate::training::Training },
    /// A line of output from a local training run.
    RunOutput {
        training: String,
        round: u32,
        phase: crate::training::Phase,
        line: String,
    },
}
