//! `statestore.v1.Users`: user management for admins, over the service layer (which checks
//! that the caller is in `$admins`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::{self, users_server::Users};
use super::{caller, status};
use crate::service::{Principal, Service};

pub struct UsersService {
    service: Arc<Service>,
}

impl UsersService {
    pub(crate) fn new(service: Arc<Service>) -> UsersService {
        UsersService { service }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        caller(&self.service, request)
            .await
            .map_err(|e| status::to_status(&e))
    }
}

#[tonic::async_trait]
impl Users for UsersService {
    async fn add_user(
        &self,
        request: Request<proto::AddUserRequest>,
    ) -> Result<Response<proto::AddUserResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        self.service
            .add_user(&who, r.name, r.password, r.groups)
            .await
            .map_err(|e| status::to_status(&e))?;
        Ok(Response::new(proto::AddUserResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<proto::ChangePasswordRequest>,
    ) -> Result<Response<proto::ChangePasswordResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        self.service
            .set_password(&who, r.name, r.password)
            .await
            .map_err(|e| status::to_status(&e))?;
        Ok(Response::new(proto::ChangePasswordResponse {}))
    }

    async fn remove_user(
        &self,
        request: Request<proto::RemoveUserRequest>,
    ) -> Result<Response<proto::RemoveUserResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        self.service
            .remove_user(&who, r.name)
            .await
            .map_err(|e| status::to_status(&e))?;
        Ok(Response::new(proto::RemoveUserResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        let who = self.caller(&request).await?;
        let users = self
            .service
            .users(&who)
            .map_err(|e| status::to_status(&e))?;
        Ok(Response::new(proto::ListUsersResponse {
            users: users
                .into_iter()
                .map(|u| proto::UserInfo {
                    name: u.name,
                    groups: u.groups,
                })
                .collect(),
        }))
    }
}
