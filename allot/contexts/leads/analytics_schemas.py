"""The lead analytics report: one object, rendered as the JSON API's answer, the page and the
CSV tables. Shares are per cent rounded once to one decimal (null: nothing to divide by);
durations are whole seconds. Definitions: docs/analytics.md."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class AnalyticsPeriod(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    date_from: date = Field(alias="from", description="First day (business time zone)")
    date_to: date = Field(alias="to", description="Last day, included")
    timezone: str = Field(description="The business time zone the days are counted in")
    starts_at: datetime = Field(description="The first day's midnight, in UTC")
    ends_at: datetime = Field(description="The midnight after the last day, in UTC (excluded)")


class AnalyticsFilters(BaseModel):
    source: str | None = Field(description="Only leads of this source")
    team: str | None = Field(description="Only leads whose assignee is in this team")
    own_only: bool = Field(
        description="True for operators: only the figures of their own agent (their leads, "
        "their offers, their workload)"
    )
    agent_id: uuid.UUID | None = Field(description="The operator's own agent, when own_only")


class Summary(BaseModel):
    leads: int = Field(description="Leads created in the period (after the filters)")
    open: int = Field(description="Of them, not in a terminal status now")
    closed: int = Field(description="Of them, in a terminal status now (won or lost)")
    won: int = Field(description="Of them, in a won status now")
    won_pct: float | None = Field(description="won / leads, per cent")
    won_of_closed_pct: float | None = Field(description="won / closed, per cent")


class FunnelStage(BaseModel):
    key: str = Field(description="Status key")
    label: str
    terminal: bool
    won: bool
    reached: int = Field(
        description="Leads of the period that were ever in this status (from their timeline)"
    )
    reached_pct: float | None = Field(description="reached / leads of the period, per cent")
    current: int = Field(description="Leads of the period in this status now")


class ConversionRow(BaseModel):
    key: str = Field(
        description="Source; agent id (`none`: waiting for an agent); `product:<name>` or an "
        "amount band `amount:...`; ISO week `2026-W02`"
    )
    label: str
    leads: int
    closed: int = Field(description="In a terminal status now")
    won: int = Field(description="In a won status now")
    won_pct: float | None = Field(description="won / leads, per cent")
    won_of_closed_pct: float | None = Field(description="won / closed, per cent")
    starts_on: date | None = Field(default=None, description="Weeks: first day in the period")
    ends_on: date | None = Field(default=None, description="Weeks: last day in the period")


class ResponseFigures(BaseModel):
    leads: int
    responded: int = Field(description="Leads with a first response")
    no_response: int = Field(description="Leads without one (yet)")
    p50_seconds: int | None = Field(
        description="Median seconds from creation to first response (nearest rank)"
    )
    p90_seconds: int | None = Field(description="90th percentile, seconds (nearest rank)")
    sla_met: int = Field(description="First response by the deadline")
    sla_breached: int = Field(
        description="First response after the deadline, or none and the deadline passed"
    )
    sla_pending: int = Field(description="No response yet, deadline still ahead")
    sla_breached_pct: float | None = Field(description="breached / (met + breached), per cent")


class ManagerResponse(BaseModel):
    agent_id: uuid.UUID | None = Field(description="Current assignee (null: waiting for one)")
    name: str
    figures: ResponseFigures


class WorkloadSeries(BaseModel):
    agent_id: uuid.UUID
    name: str
    open_by_day: list[int] = Field(
        description="Open leads assigned to the agent at the end of each day of `workload_days`"
    )
    average: float = Field(description="Mean of open_by_day, one decimal")
    peak: int
    at_end: int = Field(description="Open at the end of the last day")


class AgentRouting(BaseModel):
    agent_id: uuid.UUID
    name: str
    offered: int
    accepted: int
    declined: int
    timed_out: int
    rescinded: int = Field(description="Withdrawn: someone else accepted first, or the agent left")
    pending: int = Field(description="Still waiting for an answer")
    unassigned: int = Field(description="Leads taken back from this agent")


class RoutingOutcomes(BaseModel):
    offered: int = Field(description="Offers made for the period's leads")
    accepted: int
    declined: int
    timed_out: int
    rescinded: int
    pending: int
    items: int = Field(description="The period's leads routing knows of")
    never_assigned: int = Field(description="Never assigned to anyone")
    assigned_once: int
    reassigned: int = Field(description="Assigned to two agents or more")
    unassigned: int = Field(description="Times a lead was taken back from its assignee")
    unassigned_by_reason: dict[str, int] = Field(
        description="first_response_sla: the first response was late; agent_unavailable: the "
        "assignee went offline, on leave or was deactivated"
    )
    by_agent: list[AgentRouting]


class LeadAnalytics(BaseModel):
    """Every figure of the lead analytics for one period and filter."""

    period: AnalyticsPeriod
    filters: AnalyticsFilters
    generated_at: datetime = Field(description="When the figures were computed (UTC)")
    summary: Summary
    funnel: list[FunnelStage] = Field(description="Pipeline statuses in order")
    conversion_by_source: list[ConversionRow] = Field(description="Best conversion first")
    conversion_by_manager: list[ConversionRow] = Field(
        description="By current assignee, best conversion first"
    )
    conversion_by_product: list[ConversionRow] = Field(
        description="By `attributes.product`, else by loan-amount band; best first"
    )
    conversion_by_week: list[ConversionRow] = Field(
        description="ISO weeks of creation in the business time zone, in order"
    )
    response: ResponseFigures = Field(description="First response and SLA, all leads")
    response_by_manager: list[ManagerResponse] = Field(
        description="By current assignee, slowest median first"
    )
    workload_days: list[date] = Field(description="The days of the workload series")
    workload: list[WorkloadSeries] = Field(description="Busiest on average first")
    routing: RoutingOutcomes
    best_source: str | None = Field(
        description="The source with the highest won_pct (ties: more leads); null if none won"
    )
    slowest_agent_id: uuid.UUID | None = Field(
        description="The assignee with the highest median first response (ties: p90)"
    )
