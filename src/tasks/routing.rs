//! Which agent gets a task. Capability matching is always the first filter;
//! agents that are gone or full are passed over next; the policy's strategy
//! then scores the rest:
//!
//! - `ucb1`: `reward + c * sqrt(ln(N+1) / (n+1))` on each agent's record for
//!   the task's type (n: its outcomes of that type, N: all candidates'
//!   outcomes of that type). The reward blends how often it succeeded and
//!   how well its work was judged: `(1 - w) * success_rate + w * quality`,
//!   with `w` the policy's `ucb1_score_weight` and quality the mean verdict
//!   score over 100 (its success rate when no outcome carried a verdict, so
//!   a record without verdicts is judged on successes alone); 0 without
//!   history. The agent most likely to do the task well wins, while agents
//!   with little history get tried.
//! - `least_loaded`: the largest share of free slots (`1 - active / max`).
//! - `round_robin`: agents in name order, starting after the one the previous
//!   round-robin decision chose (the store remembers it, so the turn survives
//!   restarts and is shared by every server on the store).
//!
//! Equal scores are broken by a draw seeded with the policy's `seed`, the
//! task id and the agent's name, so the same inputs always give the same
//! choice. Every candidate's score (or why it was excluded) is part of the
//! decision, which the store keeps.
//!
//! Pure: no I/O, no clock (the caller passes `now`).

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{AgentRecord, RequiredCapabilities, TaskType, TypeStats};
pub use crate::policy::file::RoutingStrategy;

/// An agent as routing sees it.
#[derive(Debug, Clone)]
pub struct AgentSnapshot {
    pub agent: AgentRecord,
    /// Tasks assigned to it or held by it.
    pub active: u32,
    /// Its record on the task's type.
    pub stats: TypeStats,
}

/// What one decision is made from.
#[derive(Debug, Clone)]
pub struct RoutingInput<'a> {
    pub task_id: i64,
    pub task_type: TaskType,
    pub required: &'a RequiredCapabilities,
    /// Every registered agent of the tenant.
    pub agents: Vec<AgentSnapshot>,
    /// The agent the previous round-robin decision chose.
    pub last_round_robin: Option<String>,
}

/// The policy's settings for one decision.
#[derive(Debug, Clone, Copy)]
pub struct RoutingParams {
    pub strategy: RoutingStrategy,
    /// UCB1's c.
    pub exploration: f64,
    /// UCB1's weight of the mean verdict score in the reward (0 to 1).
    pub score_weight: f64,
    pub seed: u64,
    pub agent_timeout_ms: i64,
    pub now: i64,
}

/// One candidate in a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CandidateScore {
    pub agent: String,
    /// Capable and available; excluded candidates have no score.
    pub eligible: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// How the score was made, or why the agent was excluded.
    pub detail: String,
}

/// Candidates as the store keeps them: `[agent, score, detail]` each, the
/// score `null` for an excluded agent. A third smaller than the objects,
/// which matters with a hundred agents on every `task_submit`.
pub fn stored_candidates(candidates: &[CandidateScore]) -> String {
    let compact: Vec<(&str, Option<f64>, &str)> = candidates
        .iter()
        .map(|c| {
            (
                c.agent.as_str(),
                c.score.filter(|_| c.eligible),
                c.detail.as_str(),
            )
        })
        .collect();
    serde_json::to_string(&compact).expect("strings and numbers always serialize")
}

/// Read [`stored_candidates`]' form, or the objects decisions were first
/// stored as.
pub fn parse_stored_candidates(text: &str) -> serde_json::Result<Vec<CandidateScore>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Compact(String, Option<f64>, String),
        Object(CandidateScore),
    }
    let stored: Vec<Stored> = serde_json::from_str(text)?;
    Ok(stored
        .into_iter()
        .map(|s| match s {
            Stored::Compact(agent, score, detail) => CandidateScore {
                agent,
                eligible: score.is_some(),
                score,
                detail,
            },
            Stored::Object(c) => c,
        })
        .collect())
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RouteChoice {
    pub strategy: RoutingStrategy,
    /// The seed of the tie-breaking draw.
    pub seed: u64,
    /// The agent chosen; `None`: no agent could take it, the task is queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// One sentence: who was chosen and why.
    pub rationale: String,
    /// Eligible candidates best first, then the excluded ones by name.
    pub candidates: Vec<CandidateScore>,
}

/// Scores closer than this are equal (the draw decides).
const TIE: f64 = 1e-9;

/// Decide who gets the task.
pub fn route(input: &RoutingInput<'_>, params: &RoutingParams) -> RouteChoice {
    let mut excluded = Vec::new();
    let mut eligible: Vec<&AgentSnapshot> = Vec::new();
    for snapshot in &input.agents {
        let agent = &snapshot.agent;
        let why = agent
            .capabilities
            .gap(input.task_type, input.required)
            .or_else(|| agent.unavailable(snapshot.active, params.now, params.agent_timeout_ms));
        match why {
            Some(why) => excluded.push(CandidateScore {
                agent: agent.name.clone(),
                eligible: false,
                score: None,
                detail: format!("excluded: {why}"),
            }),
            None => eligible.push(snapshot),
        }
    }
    excluded.sort_by(|a, b| a.agent.cmp(&b.agent));

    let mut scored: Vec<(f64, u64, CandidateScore)> = match params.strategy {
        RoutingStrategy::Ucb1 => ucb1(&eligible, params.exploration, params.score_weight),
        RoutingStrategy::LeastLoaded => least_loaded(&eligible),
        RoutingStrategy::RoundRobin => round_robin(&eligible, input.last_round_robin.as_deref()),
    }
    .into_iter()
    .map(|(score, candidate)| {
        let draw = draw(params.seed, input.task_id, &candidate.agent);
        (score, draw, candidate)
    })
    .collect();
    // Best score first; equal scores by the draw.
    scored.sort_by(|a, b| {
        if (a.0 - b.0).abs() <= TIE {
            a.1.cmp(&b.1)
        } else {
            b.0.total_cmp(&a.0)
        }
    });
    let tied = scored.len() > 1 && (scored[0].0 - scored[1].0).abs() <= TIE;
    let chosen = scored.first().map(|(_, _, c)| c.agent.clone());
    let rationale = match (&chosen, scored.first()) {
        (Some(name), Some((score, _, _))) => format!(
            "{} chose {name} (score {score:.3}{}) of {} eligible agent(s); {} excluded",
            params.strategy.as_str(),
            if tied { ", tie broken by the seeded draw" } else { "" },
            scored.len(),
            excluded.len()
        ),
        _ if input.agents.is_empty() => {
            "no agent is registered; the task is queued for the first capable agent that asks (task_next)".to_string()
        }
        _ => format!(
            "none of the {} registered agent(s) can take it now; the task is queued for the first capable agent that asks (task_next)",
            input.agents.len()
        ),
    };
    RouteChoice {
        strategy: params.strategy,
        seed: params.seed,
        chosen,
        rationale,
        candidates: scored
            .into_iter()
            .map(|(_, _, c)| c)
            .chain(excluded)
            .collect(),
    }
}

fn eligible_score(agent: &str, score: f64, detail: String) -> (f64, CandidateScore) {
    (
        score,
        CandidateScore {
            agent: agent.to_string(),
            eligible: true,
            score: Some((score * 1000.0).round() / 1000.0),
            detail,
        },
    )
}

fn ucb1(eligible: &[&AgentSnapshot], c: f64, w: f64) -> Vec<(f64, CandidateScore)> {
    let total: u32 = eligible.iter().map(|s| s.stats.attempts).sum();
    let ln_total = (f64::from(total) + 1.0).ln();
    eligible
        .iter()
        .map(|s| {
            let n = s.stats.attempts;
            let rate = s.stats.success_rate().unwrap_or(0.0);
            let mean_score = s.stats.mean_score();
            let quality = mean_score.map_or(rate, |m| m / 100.0);
            let reward = (1.0 - w) * rate + w * quality;
            let bonus = c * (ln_total / (f64::from(n) + 1.0)).sqrt();
            let scored = match mean_score {
                Some(m) => format!(
                    ", mean verdict score {m:.1} over {} → reward {reward:.2} (score weight {w:.2})",
                    s.stats.scored
                ),
                None => String::new(),
            };
            eligible_score(
                &s.agent.name,
                reward + bonus,
                format!(
                    "success {}/{n} = {rate:.2}{scored}, exploration bonus {bonus:.2} (n={n}, N={total}, c={c:.2})",
                    s.stats.successes
                ),
            )
        })
        .collect()
}

fn least_loaded(eligible: &[&AgentSnapshot]) -> Vec<(f64, CandidateScore)> {
    eligible
        .iter()
        .map(|s| {
            let max = s.agent.max_concurrent_tasks.max(1);
            let free = 1.0 - f64::from(s.active) / f64::from(max);
            eligible_score(
                &s.agent.name,
                free,
                format!("{} of {max} slot(s) busy", s.active),
            )
        })
        .collect()
}

fn round_robin(eligible: &[&AgentSnapshot], last: Option<&str>) -> Vec<(f64, CandidateScore)> {
    let mut names: Vec<&str> = eligible.iter().map(|s| s.agent.name.as_str()).collect();
    names.sort_unstable();
    let start = last
        .and_then(|last| names.iter().position(|n| *n > last))
        .unwrap_or(0);
    let count = names.len();
    (0..count)
        .map(|turn| {
            let name = names[(start + turn) % count];
            let detail = if turn == 0 {
                match last {
                    Some(last) => format!("next in turn after {last}"),
                    None => "first in turn".to_string(),
                }
            } else {
                format!("{} place(s) later in turn", turn)
            };
            eligible_score(name, 1.0 - turn as f64 / count as f64, detail)
        })
        .collect()
}

/// A number from the seed, the task and the agent: stable across runs,
/// platforms and Rust versions (FNV-1a, then a splitmix64 finish).
pub fn draw(seed: u64, task_id: i64, agent: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed
        .to_le_bytes()
        .into_iter()
        .chain(task_id.to_le_bytes())
        .chain(agent.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Capabilities;

    const MINUTE: i64 = 60_000;
    const NOW: i64 = 1_000 * MINUTE;

    #[test]
    fn candidates_survive_the_compact_store_form_and_the_first_one_still_reads() {
        let candidates = vec![
            CandidateScore {
                agent: "ann".into(),
                eligible: true,
                score: Some(1.25),
                detail: "success 1/2 = 0.50".into(),
            },
            CandidateScore {
                agent: "bob \"b\"".into(),
                eligible: false,
                score: None,
                detail: "excluded: gone".into(),
            },
        ];
        let stored = stored_candidates(&candidates);
        assert_eq!(
            stored,
            r#"[["ann",1.25,"success 1/2 = 0.50"],["bob \"b\"",null,"excluded: gone"]]"#
        );
        assert_eq!(parse_stored_candidates(&stored).unwrap(), candidates);
        let first_form = serde_json::to_string(&candidates).unwrap();
        assert_eq!(parse_stored_candidates(&first_form).unwrap(), candidates);
        assert!(parse_stored_candidates(r#"[["ann"]]"#).is_err());
    }

    fn agent(name: &str, types: &[TaskType], languages: &[&str], max: u32) -> AgentSnapshot {
        AgentSnapshot {
            agent: AgentRecord {
                tenant: "default".into(),
                name: name.into(),
                capabilities: Capabilities {
                    task_types: types.to_vec(),
                    languages: languages.iter().map(|s| s.to_string()).collect(),
                    tools: vec![],
                }
                .normalized()
                .unwrap(),
                max_concurrent_tasks: max,
                registered_at: 0,
                last_seen_at: NOW,
                declared_at: None,
            },
            active: 0,
            stats: TypeStats::default(),
        }
    }

    fn stats(attempts: u32, successes: u32) -> TypeStats {
        TypeStats {
            attempts,
            successes,
            failures: attempts - successes,
            duration_ms: 0,
            scored: 0,
            score_sum: 0.0,
        }
    }

    fn params(strategy: RoutingStrategy, seed: u64) -> RoutingParams {
        RoutingParams {
            strategy,
            exploration: std::f64::consts::SQRT_2,
            score_weight: 0.5,
            seed,
            agent_timeout_ms: 10 * MINUTE,
            now: NOW,
        }
    }

    fn decide(
        agents: Vec<AgentSnapshot>,
        task_id: i64,
        last: Option<&str>,
        p: RoutingParams,
    ) -> RouteChoice {
        let required = RequiredCapabilities::default();
        route(
            &RoutingInput {
                task_id,
                task_type: TaskType::Bugfix,
                required: &required,
                agents,
                last_round_robin: last.map(str::to_string),
            },
            &p,
        )
    }

    #[test]
    fn capability_is_always_a_filter() {
        for strategy in [
            RoutingStrategy::Ucb1,
            RoutingStrategy::LeastLoaded,
            RoutingStrategy::RoundRobin,
        ] {
            let required = RequiredCapabilities {
                languages: vec!["rust".into()],
                tools: vec![],
            };
            let choice = route(
                &RoutingInput {
                    task_id: 1,
                    task_type: TaskType::Bugfix,
                    required: &required,
                    agents: vec![
                        agent("docs-writer", &[TaskType::Docs], &["rust"], 5),
                        agent("pythonista", &[TaskType::Bugfix], &["python"], 5),
                        agent("rustacean", &[TaskType::Bugfix], &["rust"], 1),
                    ],
                    last_round_robin: None,
                },
                &params(strategy, 1),
            );
            assert_eq!(choice.chosen.as_deref(), Some("rustacean"), "{choice:?}");
            let excluded: Vec<_> = choice.candidates.iter().filter(|c| !c.eligible).collect();
            assert_eq!(excluded.len(), 2);
            assert_eq!(excluded[0].detail, "excluded: does not take bugfix tasks");
            assert_eq!(excluded[1].detail, "excluded: lacks language rust");
        }
    }

    #[test]
    fn nobody_capable_means_queued_with_a_reason() {
        let choice = decide(
            vec![agent("docs", &[TaskType::Docs], &[], 1)],
            1,
            None,
            params(RoutingStrategy::Ucb1, 1),
        );
        assert_eq!(choice.chosen, None);
        assert!(choice.rationale.contains("queued"), "{}", choice.rationale);
        let none = decide(vec![], 1, None, params(RoutingStrategy::Ucb1, 1));
        assert!(none.rationale.starts_with("no agent is registered"));
    }

    #[test]
    fn gone_and_full_agents_are_passed_over() {
        let mut gone = agent("gone", &[TaskType::Bugfix], &[], 5);
        gone.agent.last_seen_at = NOW - 11 * MINUTE;
        let mut full = agent("full", &[TaskType::Bugfix], &[], 1);
        full.active = 1;
        let ready = agent("ready", &[TaskType::Bugfix], &[], 1);
        let choice = decide(
            vec![gone, full, ready],
            1,
            None,
            params(RoutingStrategy::Ucb1, 1),
        );
        assert_eq!(choice.chosen.as_deref(), Some("ready"));
        assert!(
            choice.candidates[1].detail.contains("at capacity"),
            "{choice:?}"
        );
        assert!(
            choice.candidates[2].detail.contains("not seen for 11 min"),
            "{choice:?}"
        );
    }

    #[test]
    fn ucb1_prefers_the_better_record_and_explores_the_untried() {
        let mut good = agent("good", &[TaskType::Bugfix], &[], 5);
        good.stats = stats(10, 9);
        let mut poor = agent("poor", &[TaskType::Bugfix], &[], 5);
        poor.stats = stats(10, 2);
        let choice = decide(
            vec![poor.clone(), good.clone()],
            1,
            None,
            params(RoutingStrategy::Ucb1, 1),
        );
        assert_eq!(choice.chosen.as_deref(), Some("good"));
        // good: 0.9 + sqrt2 * sqrt(ln 21 / 11) = 0.9 + 0.744
        assert_eq!(choice.candidates[0].score, Some(1.644), "{choice:?}");
        assert!(
            choice.candidates[0]
                .detail
                .starts_with("success 9/10 = 0.90"),
            "{choice:?}"
        );

        // A newcomer's bonus (sqrt2 * sqrt(ln 21)) beats both records.
        let fresh = agent("fresh", &[TaskType::Bugfix], &[], 5);
        let choice = decide(
            vec![poor.clone(), good.clone(), fresh],
            1,
            None,
            params(RoutingStrategy::Ucb1, 1),
        );
        assert_eq!(choice.chosen.as_deref(), Some("fresh"), "{choice:?}");

        // With c = 0 only the record counts.
        let mut greedy = params(RoutingStrategy::Ucb1, 1);
        greedy.exploration = 0.0;
        let fresh = agent("fresh", &[TaskType::Bugfix], &[], 5);
        let choice = decide(vec![poor, good, fresh], 1, None, greedy);
        assert_eq!(choice.chosen.as_deref(), Some("good"), "{choice:?}");
    }

    #[test]
    fn ucb1_blends_success_with_the_mean_verdict_score() {
        // Both succeeded 9 times in 10; sloppy's work scored 70 on average,
        // careful's 95.
        let mut sloppy = agent("sloppy", &[TaskType::Bugfix], &[], 5);
        sloppy.stats = TypeStats {
            scored: 10,
            score_sum: 700.0,
            ..stats(10, 9)
        };
        let mut careful = agent("careful", &[TaskType::Bugfix], &[], 5);
        careful.stats = TypeStats {
            scored: 10,
            score_sum: 950.0,
            ..stats(10, 9)
        };
        let mut p = params(RoutingStrategy::Ucb1, 1);
        p.exploration = 0.0;
        let choice = decide(vec![sloppy.clone(), careful.clone()], 1, None, p);
        assert_eq!(choice.chosen.as_deref(), Some("careful"), "{choice:?}");
        // 0.5 * 0.9 + 0.5 * 0.95
        assert_eq!(choice.candidates[0].score, Some(0.925));
        assert_eq!(choice.candidates[1].score, Some(0.8));
        assert!(
            choice.candidates[0]
                .detail
                .contains("mean verdict score 95.0 over 10 → reward 0.93"),
            "{choice:?}"
        );
        // Weight 0: scores are ignored and the seeded draw settles the tie,
        // the same way every time.
        p.score_weight = 0.0;
        let a = decide(vec![sloppy.clone(), careful.clone()], 1, None, p);
        let b = decide(vec![sloppy, careful], 1, None, p);
        assert_eq!(a.candidates[0].score, Some(0.9));
        assert_eq!(a.candidates[1].score, Some(0.9));
        assert!(
            a.rationale.contains("tie broken by the seeded draw"),
            "{a:?}"
        );
        assert_eq!(a, b);
        // A record without verdicts is judged on its successes alone.
        let mut unscored = agent("unscored", &[TaskType::Bugfix], &[], 5);
        unscored.stats = stats(10, 9);
        p.score_weight = 0.5;
        let c = decide(vec![unscored], 1, None, p);
        assert_eq!(c.candidates[0].score, Some(0.9));
    }

    #[test]
    fn least_loaded_takes_the_largest_free_share() {
        let mut busy = agent("busy", &[TaskType::Bugfix], &[], 4);
        busy.active = 3;
        let mut half = agent("half", &[TaskType::Bugfix], &[], 2);
        half.active = 1;
        let choice = decide(
            vec![busy, half],
            1,
            None,
            params(RoutingStrategy::LeastLoaded, 1),
        );
        assert_eq!(choice.chosen.as_deref(), Some("half"));
        assert_eq!(choice.candidates[0].score, Some(0.5));
        assert_eq!(choice.candidates[1].detail, "3 of 4 slot(s) busy");
    }

    #[test]
    fn round_robin_goes_in_name_order_after_the_last_choice() {
        let agents = || {
            vec![
                agent("c", &[TaskType::Bugfix], &[], 5),
                agent("a", &[TaskType::Bugfix], &[], 5),
                agent("b", &[TaskType::Bugfix], &[], 5),
            ]
        };
        let p = params(RoutingStrategy::RoundRobin, 1);
        let mut last: Option<String> = None;
        let mut order = Vec::new();
        for task in 1..=6 {
            let choice = decide(agents(), task, last.as_deref(), p);
            last = choice.chosen.clone();
            order.push(last.clone().unwrap());
        }
        assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
        // A last choice that left the pool: the next name after it.
        let choice = decide(agents(), 7, Some("bb"), p);
        assert_eq!(choice.chosen.as_deref(), Some("c"));
    }

    #[test]
    fn ties_are_broken_by_the_seed_and_only_by_it() {
        let agents = || {
            (0..8)
                .map(|i| agent(&format!("agent-{i}"), &[TaskType::Bugfix], &[], 5))
                .collect::<Vec<_>>()
        };
        let pick = |seed: u64, task: i64| {
            decide(agents(), task, None, params(RoutingStrategy::Ucb1, seed))
                .chosen
                .unwrap()
        };
        // The same seed and task always give the same agent.
        for task in 1..20 {
            assert_eq!(pick(42, task), pick(42, task));
        }
        // Different tasks spread over the agents; a different seed changes choices.
        let spread: std::collections::HashSet<String> = (1..40).map(|t| pick(42, t)).collect();
        assert!(spread.len() >= 4, "{spread:?}");
        assert!((1..40).any(|t| pick(42, t) != pick(7, t)));
        let choice = decide(agents(), 1, None, params(RoutingStrategy::Ucb1, 42));
        assert!(
            choice.rationale.contains("tie broken by the seeded draw"),
            "{}",
            choice.rationale
        );
    }

    #[test]
    fn the_draw_is_a_fixed_function() {
        // If this changes, recorded decisions can no longer be replayed.
        assert_eq!(draw(0, 0, ""), draw(0, 0, ""));
        assert_ne!(draw(1, 1, "a"), draw(1, 1, "b"));
        assert_eq!(draw(42, 7, "agent-a"), 0x1767_2e3e_3105_7248);
    }
}
