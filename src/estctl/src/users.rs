//! `estctl add-user | list-users | delete-user`: the frontend's HTTP Basic users (the IQE
//! guide's commands); `estctl add-admin | list-admins | delete-admin | add-admin-token |
//! delete-admin-token`: est-admin's accounts, in a file of their own. Passwords are read twice without echo, or once from standard input
//! with `--password-stdin`; they never appear in argv.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use hsm_est_frontend::config::FrontendConfig;
use hsm_est_web::users::{self, UserEntry, MAX_PASSWORD_LEN, MIN_PASSWORD_LEN};

/// The users file: from `--users`, or the `users_file` of `--config frontend.yaml`.
pub fn users_path(config: Option<&Path>, users: Option<&Path>) -> Result<PathBuf, String> {
    match (config, users) {
        (_, Some(u)) => Ok(u.to_path_buf()),
        (Some(c), None) => Ok(FrontendConfig::load(c)?.users_file),
        (None, None) => Err("give --config FRONTEND.yaml or --users FILE".into()),
    }
}

/// The admins file: from `--admins`, or the `admins_file` of `--config admin.yaml`.
pub fn admins_path(config: Option<&Path>, admins: Option<&Path>) -> Result<PathBuf, String> {
    match (config, admins) {
        (_, Some(a)) => Ok(a.to_path_buf()),
        (Some(c), None) => Ok(hsm_est_admin::config::AdminConfig::load(c)?.admins_file),
        (None, None) => Err("give --config ADMIN.yaml or --admins FILE".into()),
    }
}

fn read_line_no_echo(prompt: &str) -> Result<Zeroizing<String>, String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin)
        .map_err(|_| "standard input is not a terminal: use --password-stdin".to_string())?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| e.to_string())?;
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.map_err(|e| e.to_string())?;
    Ok(line)
}

fn trim_newline(mut s: Zeroizing<String>) -> Zeroizing<String> {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

/// A new password: one line of standard input, or typed twice without echo; at least
/// [`MIN_PASSWORD_LEN`] characters.
fn read_password(name: &str, password_stdin: bool) -> Result<Zeroizing<String>, String> {
    let password = if password_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        trim_newline(line)
    } else {
        let first = trim_newline(read_line_no_echo(&format!("password for {name}: "))?);
        let second = trim_newline(read_line_no_echo("again: ")?);
        if *first != *second {
            return Err("the passwords differ".into());
        }
        first
    };
    if password.chars().count() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "a password must have at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    Ok(password)
}

pub fn add_user(
    path: &Path,
    name: &str,
    password_stdin: bool,
    labels: Vec<String>,
    operations: Vec<String>,
) -> Result<(), String> {
    if !users::valid_user_name(name) {
        return Err("a user name is 1-64 characters of letters, digits, - _ . @".into());
    }
    for op in &operations {
        if !matches!(op.as_str(), "bootstrap" | "simpleenroll" | "simplereenroll") {
            return Err(format!(
                "--operation {op:?}: use bootstrap, simpleenroll or simplereenroll"
            ));
        }
    }
    let password = read_password(name, password_stdin)?;
    let mut file = users::load(path)?;
    if file.users.iter().any(|u| u.name == name) {
        return Err(format!("user {name} exists; delete it first to change it"));
    }
    file.users.push(UserEntry {
        name: name.to_string(),
        hash: users::hash_password(&password)?,
        labels,
        operations,
    });
    users::save(path, &file)?;
    println!("user {name} added to {}", path.display());
    Ok(())
}

pub fn list_users(path: &Path) -> Result<(), String> {
    let file = users::load(path)?;
    for u in &file.users {
        let labels = if u.labels.is_empty() {
            "all labels".to_string()
        } else {
            u.labels.join(",")
        };
        let ops = if u.operations.is_empty() {
            "all operations".to_string()
        } else {
            u.operations.join(",")
        };
        println!("{:<32} {labels}; {ops}", u.name);
    }
    println!("{} user(s)", file.users.len());
    Ok(())
}

pub fn delete_user(path: &Path, name: &str) -> Result<(), String> {
    let mut file = users::load(path)?;
    let before = file.users.len();
    file.users.retain(|u| u.name != name);
    if file.users.len() == before {
        return Err(format!("no user {name}"));
    }
    users::save(path, &file)?;
    println!("user {name} deleted");
    Ok(())
}

/// Adds an admin of est-admin. Admins have no labels or operations: they can never enrol.
pub fn add_admin(path: &Path, name: &str, password_stdin: bool) -> Result<(), String> {
    if !users::valid_user_name(name) {
        return Err("an admin name is 1-64 characters of letters, digits, - _ . @".into());
    }
    let password = read_password(name, password_stdin)?;
    let mut file = users::load(path)?;
    if file.users.iter().any(|u| u.name == name) {
        return Err(format!("admin {name} exists; delete it first to change it"));
    }
    file.users.push(UserEntry {
        name: name.to_string(),
        hash: users::hash_password(&password)?,
        labels: vec![],
        operations: vec![],
    });
    users::save(path, &file)?;
    println!("admin {name} added to {}", path.display());
    Ok(())
}

pub fn list_admins(path: &Path) -> Result<(), String> {
    let file = users::load(path)?;
    for u in &file.users {
        let tokens: Vec<&str> = file
            .tokens
            .iter()
            .filter(|t| t.user == u.name)
            .map(|t| t.id.as_str())
            .collect();
        if tokens.is_empty() {
            println!("{}", u.name);
        } else {
            println!("{:<32} API tokens: {}", u.name, tokens.join(","));
        }
    }
    println!("{} admin(s)", file.users.len());
    Ok(())
}

/// Deletes an admin and every API token of theirs. A logged-in browser session of theirs
/// ends at its next request (est-admin reloads the file and finds no such admin).
pub fn delete_admin(path: &Path, name: &str) -> Result<(), String> {
    let mut file = users::load(path)?;
    let before = file.users.len();
    file.users.retain(|u| u.name != name);
    if file.users.len() == before {
        return Err(format!("no admin {name}"));
    }
    file.tokens.retain(|t| t.user != name);
    users::save(path, &file)?;
    println!("admin {name} deleted, with their API tokens");
    Ok(())
}

/// Makes an API token for an admin and prints it once; only its SHA-256 is stored.
pub fn add_admin_token(path: &Path, name: &str) -> Result<(), String> {
    let mut file = users::load(path)?;
    if !file.users.iter().any(|u| u.name == name) {
        return Err(format!("no admin {name}"));
    }
    let now = hsm_est_common::util::unix_seconds(std::time::SystemTime::now());
    let (token, entry) = users::new_token(name, now)?;
    let id = entry.id.clone();
    file.tokens.push(entry);
    users::save(path, &file)?;
    eprintln!("API token {id} for {name} (shown once; send it as Authorization: Bearer):");
    println!("{token}");
    Ok(())
}

pub fn delete_admin_token(path: &Path, id: &str) -> Result<(), String> {
    let mut file = users::load(path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.id != id);
    if file.tokens.len() == before {
        return Err(format!("no API token {id}"));
    }
    users::save(path, &file)?;
    println!("API token {id} deleted");
    Ok(())
}
