//! The decision a tool call would get, without running it: what
//! `arbiter policy check` prints. It builds the same [`Action`]s the tools
//! build, from paths resolved by the same confinement, and asks the same
//! [`Toolbox::enforce`]-style merge of the policy in force, so the command
//! line and the live server cannot disagree (`tests/policy.rs` proves it on a
//! table of cases).

use serde_json::{Map, Value};

use super::delete_move::{DeleteFileInput, MoveFileInput};
use super::files::{FileReadInput, FileSearchReplaceInput, FileWriteInput};
use super::find::ListDirInput;
use super::terminal::RunTerminalCmdInput;
use super::{ToolError, Toolbox, check_arguments};
use crate::exec::ConfineError;
use crate::policy::{Action, Decision};

/// Why a call could not even be judged.
#[derive(Debug)]
pub enum CheckError {
    /// Unknown tool or malformed arguments (a JSON-RPC error on the server).
    Invalid(String),
    /// Refused before the policy: the path leaves the workspace, or similar.
    Refused(ToolError),
}

impl Toolbox {
    /// Decide `tool` with `args` as the server would, without doing it.
    pub async fn decide(
        &self,
        tool: &str,
        args: &Map<String, Value>,
    ) -> Result<Decision, CheckError> {
        let policy = self.policy.load();
        let parse = |args: &Map<String, Value>| match check_arguments(tool, args) {
            None => Err(CheckError::Invalid(format!(
                "unknown tool `{tool}`; policy check knows file_read, file_write, file_search_replace, delete_file, move_file, list_dir, grep_search, file_search, arbiter_validate, run_terminal_cmd, terminal_create_session and terminal_execute_command"
            ))),
            Some(Err(e)) => Err(CheckError::Invalid(format!(
                "invalid arguments for `{tool}`: field `{}`: {}",
                e.field, e.message
            ))),
            Some(Ok(())) => Ok(()),
        };
        parse(args)?;
        let value = Value::Object(args.clone());
        let invalid = |e: serde_json::Error| CheckError::Invalid(e.to_string());
        let mut decision = Decision::allow();
        match tool {
            "file_read" => {
                let input: FileReadInput = serde_json::from_value(value).map_err(invalid)?;
                let path = self.read_subject(&input.target_file)?;
                decision.merge(policy.evaluate(&Action::ReadFile { path: &path }));
            }
            "file_write" => {
                let input: FileWriteInput = serde_json::from_value(value).map_err(invalid)?;
                let (path, hard_linked) = self.write_subject(&input.file_path)?;
                decision.merge(policy.evaluate(&Action::WriteFile {
                    path: &path,
                    hard_linked,
                    added: &input.contents,
                }));
                if decision.is_allowed() {
                    let before = self.old_text(&path);
                    decision.merge(self.spec_check(&path, &before, &input.contents).await?);
                }
            }
            "file_search_replace" => {
                let input: FileSearchReplaceInput =
                    serde_json::from_value(value).map_err(invalid)?;
                let path = self.read_subject(&input.file_path)?;
                let (_, hard_linked) = self.write_subject(&input.file_path)?;
                decision.merge(policy.evaluate(&Action::ReadFile { path: &path }));
                decision.merge(policy.evaluate(&Action::WriteFile {
                    path: &path,
                    hard_linked,
                    added: &input.new_string,
                }));
                if decision.is_allowed() {
                    // Measure the edit as the tool would; an edit that cannot
                    // apply fails in the tool, after the policy said yes.
                    let before = self.old_text(&path);
                    let after = super::edit::search_replace(
                        &before,
                        &input.old_string,
                        &input.new_string,
                        input.replace_all.unwrap_or(false),
                        &path,
                    )
                    .map(|e| e.text)
                    .unwrap_or_else(|_| before.clone());
                    decision.merge(self.spec_check(&path, &before, &after).await?);
                }
            }
            "arbiter_validate" => {
                // Read-only: a spec given by path is a read of that file.
                let input: super::caws::ArbiterValidateInput =
                    serde_json::from_value(value).map_err(invalid)?;
                if super::caws::looks_like_a_path(&input.spec) {
                    let path = self.read_subject(&input.spec)?;
                    decision.merge(policy.evaluate(&Action::ReadFile { path: &path }));
                }
            }
            "delete_file" => {
                let input: DeleteFileInput = serde_json::from_value(value).map_err(invalid)?;
                let (path, is_dir, _) = self.entry_subject(&input.target_file)?;
                decision.merge(policy.evaluate(&Action::DeleteFile {
                    path: &path,
                    is_dir,
                }));
            }
            "move_file" => {
                let input: MoveFileInput = serde_json::from_value(value).map_err(invalid)?;
                let (from, is_dir, _) = self.entry_subject(&input.source)?;
                let (to, _, hard_linked) = self.entry_subject(&input.destination)?;
                decision.merge(policy.evaluate(&Action::DeleteFile {
                    path: &from,
                    is_dir,
                }));
                decision.merge(policy.evaluate(&Action::WriteFile {
                    path: &to,
                    hard_linked: hard_linked && input.overwrite.unwrap_or(false),
                    added: "",
                }));
            }
            "list_dir" => {
                let input: ListDirInput = serde_json::from_value(value).map_err(invalid)?;
                let (_, path) = self
                    .root
                    .open_dir(&input.relative_workspace_path)
                    .map_err(|e| CheckError::Refused(e.into()))?;
                if !path.is_empty() {
                    decision.merge(policy.evaluate(&Action::ReadFile { path: &path }));
                }
            }
            // Searches are not refused: what the policy hides is left out of their results.
            "grep_search" | "file_search" => {}
            "run_terminal_cmd" => {
                let input: RunTerminalCmdInput = serde_json::from_value(value).map_err(invalid)?;
                // The working directory is resolved first, as the tool does.
                self.command_cwd(input.cwd.as_deref())
                    .map_err(CheckError::Refused)?;
                decision.merge(policy.evaluate(&Action::RunCommand {
                    command: &input.command,
                }));
            }
            // A session's shell, and each command typed into it, are judged like run_terminal_cmd's.
            "terminal_create_session" => {
                let input: crate::tools::sessions::CreateSessionInput =
                    serde_json::from_value(value).map_err(invalid)?;
                self.command_cwd(input.cwd.as_deref())
                    .map_err(CheckError::Refused)?;
                decision.merge(policy.evaluate(&Action::RunCommand {
                    command: input.shell.as_deref().unwrap_or("/bin/sh"),
                }));
            }
            "terminal_execute_command" => {
                let input: crate::tools::sessions::ExecuteCommandInput =
                    serde_json::from_value(value).map_err(invalid)?;
                decision.merge(policy.evaluate(&Action::RunCommand {
                    command: &input.command,
                }));
            }
            _ => {
                return Err(CheckError::Invalid(format!(
                    "policy check knows file_read, file_write, file_search_replace, run_terminal_cmd, terminal_create_session and terminal_execute_command; `{tool}` is not judged by the policy"
                )));
            }
        }
        Ok(decision)
    }

    async fn spec_check(
        &self,
        path: &str,
        before: &str,
        after: &str,
    ) -> Result<Decision, CheckError> {
        self.judge_spec_write(path, before, after)
            .await
            .map(|(decision, _)| decision)
            .map_err(CheckError::Refused)
    }

    /// A file's current text, or nothing (missing, binary, too large).
    fn old_text(&self, path: &str) -> String {
        self.root
            .open_for_read(path)
            .ok()
            .and_then(|f| super::files::read_whole_text(f, self.limits.edit_max_bytes).ok())
            .unwrap_or_default()
    }

    /// The real path a read would be judged on; a file that does not exist
    /// yet is judged on the path as given.
    fn read_subject(&self, user_path: &str) -> Result<String, CheckError> {
        match self.root.open_for_read(user_path) {
            Ok(opened) => Ok(opened.rel_path),
            Err(ConfineError::NotFound(_)) => Ok(user_path.to_string()),
            Err(e) => Err(CheckError::Refused(e.into())),
        }
    }

    /// The real path of the entry a delete or move names (its last symlink
    /// not followed), whether it is a directory, and whether it is a file
    /// with other hard links.
    fn entry_subject(&self, user_path: &str) -> Result<(String, bool, bool), CheckError> {
        use crate::exec::EntryKind;
        match self.root.locate_entry(user_path) {
            Ok(target) => Ok((
                target.rel_path,
                target.existing.is_some_and(|m| m.kind == EntryKind::Dir),
                target
                    .existing
                    .is_some_and(|m| m.kind == EntryKind::File && m.nlink > 1),
            )),
            Err(e) => Err(CheckError::Refused(e.into())),
        }
    }

    fn write_subject(&self, user_path: &str) -> Result<(String, bool), CheckError> {
        match self.root.prepare_write(user_path) {
            Ok(target) => Ok((
                target.rel_path,
                target.existing.is_some_and(|e| e.nlink > 1),
            )),
            Err(e) => Err(CheckError::Refused(e.into())),
        }
    }
}
