"""The JSON API's request and response bodies (they also make the OpenAPI document at /docs).
Text fields are taken and given back exactly as sent: no trimming, no escaping."""

from datetime import datetime

from pydantic import BaseModel, Field


class SignInRequest(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)


class User(BaseModel):
    id: int
    email: str
    display_name: str


class SignedInSession(BaseModel):
    token: str = Field(description="the session token: send it as `Authorization: Bearer <token>` (or use the "
                                   "cookie that was set, then with the X-CSRF-Token header on changes)")
    csrf_token: str
    expires_at: datetime
    user: User


class ProfileUpdate(BaseModel):
    display_name: str


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class Organization(BaseModel):
    id: int
    slug: str
    name: str
    role: str | None = Field(None, description="the caller's role in it")
    created_at: datetime
    updated_at: datetime


class OrganizationCreate(BaseModel):
    name: str
    slug: str | None = Field(None, description="URL name; derived from the name when not given")


class OrganizationUpdate(BaseModel):
    name: str


class Tenant(BaseModel):
    id: str
    name: str
    status: str
    api_url: str
    created_at: datetime


class Member(BaseModel):
    user_id: int
    email: str
    display_name: str
    active: bool
    role: str
    joined_at: datetime


class MemberInvite(BaseModel):
    email: str
    role: str = "member"
    display_name: str | None = Field(None, description="for a new account; default: the email's local part")


class InvitedMember(Member):
    initial_password: str | None = Field(None, description="only when the invitation created the account: "
                                                           "its first password, shown this once")


class MemberUpdate(BaseModel):
    role: str


class PlanOut(BaseModel):
    name: str
    title: str
    max_seats: int
    monthly_price_per_seat_eur: int


class Subscription(BaseModel):
    plan: str
    plan_title: str
    plan_max_seats: int
    seats: int
    seats_used: int
    status: str
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    cancelled_at: datetime | None


class SubscriptionUpdate(BaseModel):
    plan: str | None = None
    seats: int | None = Field(None, ge=1, le=100000)


class SubscriptionCancel(BaseModel):
    at_period_end: bool = Field(True, description="true: runs to the end of the paid period; false: ends now")


class Ticket(BaseModel):
    id: int
    subject: str
    body: str
    status: str
    opened_by: int | None
    opened_by_name: str | None
    assignee_id: int | None
    assignee_name: str | None
    comment_count: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class TicketCreate(BaseModel):
    subject: str
    body: str


class TicketAssign(BaseModel):
    assignee_id: int | None = Field(description="an admin or owner of the organization; null unassigns")


class Comment(BaseModel):
    id: int
    ticket_id: int
    author_id: int | None
    author_name: str | None
    body: str
    created_at: datetime


class CommentCreate(BaseModel):
    body: str


class PortalEvent(BaseModel):
    id: int
    occurred_at: datetime
    action: str
    user_id: int | None
    user_display_name: str | None
    detail: dict
