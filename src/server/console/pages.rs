//! The console's HTML. maud escapes every interpolated value, so text an
//! agent wrote (a reason, a path, a command) is shown, never run. No inline
//! scripts or styles: the CSP allows neither.

use maud::{DOCTYPE, Markup, html};

use super::SignedIn;
use super::data::{AuditFilter, AuditView, OverridesView, PAGE_SIZE, TasksView};
use super::session::Flash;
use crate::overrides::{OverrideRecord, rfc3339};

/// What every signed-in page shows around its content.
pub struct Frame<'a> {
    pub person: &'a str,
    /// The tenant shown.
    pub tenant: &'a str,
    /// The tenants an operator may switch to; empty for one tenant's admin.
    pub tenants: &'a [String],
    /// `?tenant=NAME` for this frame's links and forms, or empty.
    pub query: String,
    pub csrf: &'a str,
    pub flash: Option<&'a Flash>,
    pub active: &'static str,
}

impl<'a> Frame<'a> {
    pub fn of(me: &'a SignedIn, active: &'static str) -> Self {
        Frame {
            person: &me.session.person,
            tenant: &me.runtime.name,
            tenants: &me.tenants,
            query: me.tenant_query(),
            csrf: &me.session.csrf,
            flash: me.flash.as_ref(),
            active,
        }
    }
}

fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · arbiter" }
                link rel="stylesheet" href="/ui/static/console.css";
            }
            body { (body) }
        }
    }
}

fn framed(frame: &Frame<'_>, title: &str, content: Markup) -> Markup {
    let tab = |id: &str, href: &str, label: &str| {
        html! { a.tab.active[frame.active == id] href={ (href) (frame.query) } { (label) } }
    };
    document(
        title,
        html! {
            header {
                span.brand { "arbiter" }
                nav {
                    (tab("overrides", "/ui/overrides", "Overrides"))
                    (tab("audit", "/ui/audit", "Audit trail"))
                    (tab("tasks", "/ui/tasks", "Tasks"))
                }
                span.who { "tenant " b { (frame.tenant) } " · " (frame.person) }
                @if !frame.tenants.is_empty() {
                    nav.tenants aria-label="Tenants" {
                        "Tenants: "
                        @for t in frame.tenants {
                            a.tab.active[t == frame.tenant] href={ "/ui/" (frame.active) "?tenant=" (t) } { (t) }
                        }
                    }
                }
                form.inline method="post" action="/ui/logout" {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    button.link type="submit" { "Sign out" }
                }
            }
            main {
                @if let Some(flash) = frame.flash {
                    p.flash.ok[flash.ok].error[!flash.ok] role="status" { (flash.text) }
                }
                h1 { (title) }
                (content)
            }
        },
    )
}

/// The sign-in page; `csrf` empty: no form (the session just ended).
pub fn login(csrf: &str, problem: Option<&str>) -> Markup {
    document(
        "Sign in",
        html! {
            main.narrow {
                h1 { "arbiter console" }
                @if let Some(problem) = problem {
                    p.flash.error role="alert" { (problem) }
                }
                @if csrf.is_empty() {
                    p { a href="/ui/login" { "Sign in again" } }
                } @else {
                    form method="post" action="/ui/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        label for="token" { "Admin token" }
                        input #token type="password" name="token" autocomplete="off"
                            placeholder="arb_…" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                    p.hint {
                        "An operator makes an admin token with "
                        code { "arbiter token create --tenant NAME --agent YOUR-NAME --admin" }
                        ". Agent tokens cannot open the console."
                    }
                }
            }
        },
    )
}

/// A page that says what went wrong and what to do.
pub fn problem(title: &str, text: &str) -> Markup {
    document(
        title,
        html! {
            main.narrow {
                h1 { (title) }
                p.flash.error role="alert" { (text) }
                p { a href="/ui/overrides" { "Back to the console" } " · " a href="/ui/login" { "Sign in" } }
            }
        },
    )
}

fn when(t: i64) -> String {
    rfc3339(t)
}

pub fn overrides(frame: &Frame<'_>, view: &OverridesView) -> Markup {
    let content = html! {
        @if view.pending.is_empty() {
            p.empty { "No request is waiting for a decision." }
        }
        @for p in &view.pending {
            @let r = &p.record;
            @let id = r.display_id();
            section.card.pending id=(id) {
                h2 { (id) " · " span.rule { (r.rule_id) } " · agent " b { (r.agent) } }
                dl {
                    dt { "Justification" } dd.reason { (r.reason) }
                    dt { "Scope asked" } dd { (r.scope.describe()) }
                    dt { "Duration asked" } dd {
                        @match r.requested_minutes {
                            Some(m) => { (m) " minutes" }
                            None => { "not said (default " (view.default_minutes) " minutes)" }
                        }
                    }
                    dt { "Asked at" } dd { (when(r.created_at)) " · session " code { (r.session_id) } }
                    dt { "Refused call" } dd {
                        @match &p.refused_call {
                            Some(call) => {
                                code.tool { (call.tool) }
                                pre.args { (call.args_redacted) }
                                p.detail { (call.detail) }
                                p.meta { "audit seq " (call.seq) " · " (call.ts) " · decision " (call.decision) }
                            }
                            None => { span.muted { "no refused call under this rule found in the trail" } }
                        }
                    }
                }
                div.actions {
                    form.decide method="post" action={ "/ui/overrides/" (id) "/approve" (frame.query) } {
                        input type="hidden" name="csrf" value=(frame.csrf);
                        label { "Minutes "
                            input type="number" name="minutes" min="1" max=(view.max_minutes)
                                value=(r.requested_minutes.unwrap_or(view.default_minutes));
                        }
                        label { "Note " input type="text" name="note" maxlength="500"; }
                        button.approve type="submit" { "Approve" }
                    }
                    form.decide method="post" action={ "/ui/overrides/" (id) "/deny" (frame.query) } {
                        input type="hidden" name="csrf" value=(frame.csrf);
                        label { "Note " input type="text" name="note" maxlength="500"; }
                        button.deny type="submit" { "Deny" }
                    }
                }
            }
        }
        @if !view.recent.is_empty() {
            h2 { "Recent decisions" }
            table {
                thead { tr { th { "Id" } th { "State" } th { "Rule" } th { "Agent" } th { "Reason" } th { "Decided by" } th { "Note" } th { "Until" } th {} } }
                tbody {
                    @for r in &view.recent {
                        (decided_row(frame, r, view.now))
                    }
                }
            }
        }
    };
    framed(frame, "Override requests", content)
}

fn decided_row(frame: &Frame<'_>, r: &OverrideRecord, now: i64) -> Markup {
    let state = r.state_at(now).as_str();
    let id = r.display_id();
    html! {
        tr {
            td { (id) }
            td { span.badge.(state) { (state) } }
            td { (r.rule_id) }
            td { (r.agent) }
            td.reason { (crate::overrides::one_line(&r.reason, 200)) }
            td { (r.decided_by.as_deref().unwrap_or("")) }
            td { (r.note.as_deref().unwrap_or("")) }
            td { @if state == "approved" { @if let Some(e) = r.expires_at { (when(e)) } } }
            td {
                @if state == "approved" {
                    form.inline method="post" action={ "/ui/overrides/" (id) "/revoke" (frame.query) } {
                        input type="hidden" name="csrf" value=(frame.csrf);
                        button.deny type="submit" { "Revoke" }
                    }
                }
            }
        }
    }
}

fn select(
    name: &str,
    label: &str,
    options: &std::collections::BTreeSet<String>,
    chosen: &str,
) -> Markup {
    html! {
        label { (label) " "
            select name=(name) {
                option value="" { "any" }
                @for o in options {
                    option value=(o) selected[o == chosen] { (o) }
                }
                // Keep a filter value that no record has (yet).
                @if !chosen.is_empty() && !options.contains(chosen) {
                    option value=(chosen) selected { (chosen) }
                }
            }
        }
    }
}

pub fn audit(frame: &Frame<'_>, filter: &AuditFilter, view: &AuditView) -> Markup {
    let v = &view.verify;
    let content = html! {
        @match &v.first_bad {
            None => p.verify.ok {
                "Chain verified: " (v.records) " records, head seq " (v.head_seq) ", hash " code { (v.head_hash) }
            },
            Some(bad) => p.verify.error {
                "Chain BROKEN at seq " (bad.seq) ": " (bad.reason) " (" (v.records) " records verified before it). Run "
                code { "arbiter audit verify" } " and investigate before trusting this trail."
            },
        }
        form.filters method="get" action="/ui/audit" {
            @if !frame.tenants.is_empty() {
                label { "Tenant "
                    select name="tenant" {
                        @for t in frame.tenants {
                            option value=(t) selected[t == frame.tenant] { (t) }
                        }
                    }
                }
            }
            (select("agent", "Agent", &view.agents, &filter.agent))
            (select("tool", "Tool", &view.tools, &filter.tool))
            (select("decision", "Decision", &view.decisions, &filter.decision))
            (select("outcome", "Outcome", &view.outcomes, &filter.outcome))
            label { "From (UTC) " input type="datetime-local" name="from" value=(filter.from); }
            label { "To (UTC) " input type="datetime-local" name="to" value=(filter.to); }
            button type="submit" { "Filter" }
            a href={ "/ui/audit" (frame.query) } { "Clear" }
        }
        p.meta { (view.matching) " matching records, newest first · page " (view.page) " of " (view.pages) " (" (PAGE_SIZE) " a page)" }
        table.audit {
            thead { tr { th { "Seq" } th { "Time (UTC)" } th { "Agent" } th { "Tool" } th { "Decision" } th { "Rules" } th { "Outcome" } th { "Detail" } th { "Arguments (redacted)" } } }
            tbody {
                @for r in &view.records {
                    tr {
                        td { (r.seq) }
                        td.nowrap { (r.ts) }
                        td { (r.client_name) }
                        td { code { (r.tool) } }
                        td { span.badge.(r.decision) { (r.decision) } }
                        td { (r.rule_ids) @if !r.waiver_ids.is_empty() { " waived by " (r.waiver_ids) } }
                        td { span.badge.(r.outcome) { (r.outcome) } }
                        td.detail { (r.detail) }
                        td { code.args { (r.args_redacted) } }
                    }
                }
            }
        }
        nav.pager {
            @if view.page > 1 {
                a href={ "/ui/audit?" (filter.at_page(view.page - 1)) } { "← Newer" }
            }
            @if view.page < view.pages {
                a href={ "/ui/audit?" (filter.at_page(view.page + 1)) } { "Older →" }
            }
        }
    };
    framed(frame, "Audit trail", content)
}

pub fn tasks(frame: &Frame<'_>, view: &TasksView) -> Markup {
    let content = html! {
        div.board {
            @for (title, state, items) in &view.columns {
                section.column {
                    h2 { (title) " " span.count { (items.len()) } }
                    @for item in items {
                        @let t = &item.task;
                        article.card.task.(state.as_str()) {
                            h3 { (t.display_id()) " · " (t.title) }
                            p.meta {
                                (t.task_type.as_str()) " · tier " (t.risk_tier) " · priority " (t.priority)
                                @if let Some(h) = &t.holder { " · held by " b { (h) } }
                                @if t.holder.is_none() { @if let Some(a) = &t.assigned_agent { " · assigned to " b { (a) } } }
                                @if t.progress > 0 { " · " (t.progress) "%" }
                            }
                            @if let Some(s) = &t.summary { p.summary { (s) } }
                            @if let Some(v) = &item.verdict {
                                p {
                                    "Verdict " span.badge.(v.verdict.as_str()) { (v.verdict.as_str()) }
                                    " · score " (format!("{:.0}", v.score))
                                    @if let Some(c) = v.coverage { " · coverage " (format!("{:.0}%", c * 100.0)) }
                                    @if let Some(m) = v.mutation { " · mutation " (format!("{:.0}%", m * 100.0)) }
                                    @if let Some(review) = &v.review { " · review " (review) @if let Some(by) = &v.reviewed_by { " by " (by) } }
                                }
                                @for reason in &v.reasons { p.meta { (reason) } }
                                @for g in &v.gates {
                                    details.gate {
                                        summary {
                                            span.badge.ok[g.passed].refused[!g.passed] { @if g.passed { "passed" } @else { "failed" } }
                                            " " (g.name) " · " code { (g.command) }
                                            @if let Some(code) = g.exit_code { " · exit " (code) }
                                        }
                                        p.detail { (g.detail) }
                                        pre.output { (g.output_tail) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    framed(frame, "Task board", content)
}
