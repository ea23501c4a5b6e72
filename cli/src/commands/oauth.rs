//! `inkan oauth client add|list|remove`, `inkan resource add|list|remove`.

use ca::layout::DataDir;
use enroll_server::admin::{AdminReply, AdminRequest, SecretString};
use enroll_server::oauth::operator::{ClientSpec, ResourceView};
use enroll_server::stores::oauth::OAuthClient;

use super::{Needs, admin, unexpected};
use crate::args::{OauthClientAddArgs, OauthClientRemoveArgs, ResourceAddArgs, ResourceRemoveArgs, UserListArgs};
use crate::passphrase;

const NEEDS: Needs = Needs { accounts: true, issuer: false, snapshot: false };

fn clients(reply: AdminReply) -> anyhow::Result<Vec<OAuthClient>> {
    match reply {
        AdminReply::OauthClients { clients } => Ok(clients),
        other => Err(unexpected(other)),
    }
}

fn resources(reply: AdminReply) -> anyhow::Result<Vec<ResourceView>> {
    match reply {
        AdminReply::Resources { resources } => Ok(resources),
        other => Err(unexpected(other)),
    }
}

fn done(reply: AdminReply) -> anyhow::Result<()> {
    match reply {
        AdminReply::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

pub fn client_add(args: &OauthClientAddArgs) -> anyhow::Result<()> {
    let spec = ClientSpec {
        client_id: args.id.clone(),
        name: args.name.clone(),
        company: args.company.clone(),
        redirect_uris: args.redirect_uris.clone(),
        scopes: args.scopes.clone(),
        grant_days: args.grant_days,
        allow_password_login: args.allow_password_login,
        tls_subject: args.tls_subject.clone(),
    };
    let added =
        clients(admin(&DataDir::new(&args.data_dir.data_dir), AdminRequest::OauthClientAdd { spec }, NEEDS, None)?)?;
    let Some(client) = added.first() else { anyhow::bail!("the service answered no client") };
    if args.json {
        println!("{}", serde_json::to_string_pretty(client)?);
    } else {
        println!("Registered client {} ({}): client_id {}", client.name, client.company, client.client_id);
        println!("It authenticates with a certificate whose subject is {:?} (tls_client_auth).", client.tls_subject);
    }
    Ok(())
}

pub fn client_list(args: &UserListArgs) -> anyhow::Result<()> {
    let all = clients(admin(&DataDir::new(&args.data_dir.data_dir), AdminRequest::OauthClientList, NEEDS, None)?)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!("{:<20}  {:<24}  {:<5}  {:<8}  {:<30}  REDIRECT URIS", "CLIENT ID", "NAME", "DAYS", "PASSWORD", "SCOPES");
    for c in &all {
        println!(
            "{:<20}  {:<24}  {:<5}  {:<8}  {:<30}  {}",
            c.client_id,
            c.name,
            c.grant_days,
            if c.allow_password_login { "allowed" } else { "no" },
            c.scopes.join(" "),
            c.redirect_uris.join(" ")
        );
    }
    Ok(())
}

pub fn client_remove(args: &OauthClientRemoveArgs) -> anyhow::Result<()> {
    let request = AdminRequest::OauthClientRemove { client_id: args.client_id.clone() };
    done(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)
}

pub fn resource_add(args: &ResourceAddArgs) -> anyhow::Result<()> {
    let pin = passphrase::resource_pin(&args.label)?;
    let request = AdminRequest::ResourceAdd {
        id: args.id.clone(),
        contract: args.contract.clone(),
        label: args.label.clone(),
        pin: SecretString::new(&pin),
    };
    let added = resources(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)?;
    let Some(resource) = added.first() else { anyhow::bail!("the service answered no resource") };
    if args.json {
        println!("{}", serde_json::to_string_pretty(resource)?);
    } else {
        println!("Added resource {} ({}) to contract {}.", resource.id, resource.label, resource.contract);
    }
    Ok(())
}

pub fn resource_list(args: &UserListArgs) -> anyhow::Result<()> {
    let all = resources(admin(&DataDir::new(&args.data_dir.data_dir), AdminRequest::ResourceList, NEEDS, None)?)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!("{:<20}  {:<20}  {:<30}  PIN REGISTERED BY", "ID", "CONTRACT", "LABEL");
    for r in &all {
        println!("{:<20}  {:<20}  {:<30}  {}", r.id, r.contract, r.label, r.registered.join(" "));
    }
    Ok(())
}

pub fn resource_remove(args: &ResourceRemoveArgs) -> anyhow::Result<()> {
    let request = AdminRequest::ResourceRemove { id: args.id.clone() };
    done(admin(&DataDir::new(&args.data_dir.data_dir), request, NEEDS, None)?)
}
