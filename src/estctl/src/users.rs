//! `estctl add-user | list-users | delete-user`: the frontend's HTTP Basic users (the IQE
//! guide's commands). Passwords are read twice without echo, or once from standard input
//! with `--password-stdin`; they never appear in argv.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use hsm_est_frontend::config::FrontendConfig;
use hsm_est_frontend::users::{self, UserEntry, MAX_PASSWORD_LEN, MIN_PASSWORD_LEN};

/// The users file: from `--users`, or the `users_file` of `--config frontend.yaml`.
pub fn users_path(config: Option<&Path>, users: Option<&Path>) -> Result<PathBuf, String> {
    match (config, users) {
        (_, Some(u)) => Ok(u.to_path_buf()),
        (Some(c), None) => Ok(FrontendConfig::load(c)?.users_file),
        (None, None) => Err("give --config FRONTEND.yaml or --users FILE".into()),
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
