//! Whether a switch may start: a pure decision from what the control store says.

use cutover_connector::{Direction, Observation};

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Switch (to the target) or roll back (to the source).
    pub want: Direction,
    /// The follower may be at most this many bytes behind when the switch starts.
    pub max_lag: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Proceed,
    /// Refused, with the reason and what to do.
    Refuse(String),
}

/// Decides from `observation` whether to go on with the switch `policy` describes.
pub fn decide(observation: &Observation, policy: &Policy) -> Decision {
    let (verb, expected_phase) = match policy.want {
        Direction::Reverse => ("switch", "replicating"),
        Direction::Forward => ("roll back", "switched"),
    };
    if observation.phase != expected_phase {
        let why = match (policy.want, observation.phase.as_str()) {
            (Direction::Reverse, "switched") => {
                "the migration is already switched to the target (use `cutover rollback` to go back)".to_owned()
            }
            (Direction::Forward, "replicating") => {
                "writes already go to the source: there is nothing to roll back".to_owned()
            }
            (_, "copying" | "post-data" | "copied") => format!(
                "the migration is in phase {}: let `cutover sync` finish the copy and follow changes first",
                observation.phase
            ),
            (_, other) => format!("the migration is in phase {other}, not {expected_phase}"),
        };
        return Decision::Refuse(format!("cannot {verb}: {why}"));
    }
    match observation.lag_bytes {
        None => Decision::Refuse(format!(
            "cannot {verb}: the follower has not recorded a position yet; run `cutover sync` until it has caught up"
        )),
        Some(lag) if lag > policy.max_lag => Decision::Refuse(format!(
            "cannot {verb}: the follower is {lag} bytes behind, more than --max-lag {} bytes; let `cutover sync` catch up (see `cutover status`) and try again",
            policy.max_lag
        )),
        Some(_) => Decision::Proceed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(phase: &str, lag: Option<u64>) -> Observation {
        Observation {
            phase: phase.into(),
            direction: Direction::Forward,
            lag_bytes: lag,
            follower_running: true,
        }
    }

    #[test]
    fn decisions_follow_phase_and_lag() {
        let switch = Policy {
            want: Direction::Reverse,
            max_lag: 1000,
        };
        let rollback = Policy {
            want: Direction::Forward,
            max_lag: 1000,
        };
        let cases: &[(&Observation, &Policy, Option<&str>)] = &[
            (&obs("replicating", Some(10)), &switch, None),
            (
                &obs("replicating", Some(5000)),
                &switch,
                Some("5000 bytes behind"),
            ),
            (
                &obs("replicating", None),
                &switch,
                Some("not recorded a position"),
            ),
            (&obs("copying", Some(0)), &switch, Some("finish the copy")),
            (&obs("switched", Some(0)), &switch, Some("already switched")),
            (&obs("switched", Some(0)), &rollback, None),
            (
                &obs("replicating", Some(0)),
                &rollback,
                Some("nothing to roll back"),
            ),
        ];
        for (o, p, refusal) in cases {
            match (decide(o, p), refusal) {
                (Decision::Proceed, None) => {}
                (Decision::Refuse(why), Some(part)) => assert!(why.contains(part), "{why}"),
                (d, r) => panic!("{o:?} {p:?}: {d:?}, expected refusal {r:?}"),
            }
        }
    }
}
