"""Building blocks shared by the panels: a paged table, stat cards, a plain figure layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import html

#: Cell style of every listing (the stylesheet adds borders and padding).
CELL_STYLE: dict[str, Any] = {"textAlign": "left", "fontFamily": "sans-serif", "fontSize": 13}
#: Rows per page of the paged listings.
PAGE_SIZE = 10
#: A plotly figure (or trace) as plotly.js reads it.
Figure = dict[str, Any]


def page_count(rows: int, page_size: int) -> int:
    return max(1, -(-rows // max(page_size, 1)))


def table(
    id: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    page_size: int | None = None,
    page: int = 0,
    cell_style: dict[str, Any] | None = None,
) -> html.Div:
    """A plain HTML table (dash_table.DataTable is deprecated in Dash 4 and would pull a grid
    library for a read-only listing). With ``page_size``, only page ``page`` (clamped to the last)
    is rendered, under a caption saying which rows of how many; cells may be components."""
    style = CELL_STYLE if cell_style is None else cell_style
    shown: Sequence[Sequence[Any]] = rows
    caption: list[Any] = []
    if page_size is not None:
        pages = page_count(len(rows), page_size)
        page = min(max(page, 0), pages - 1)
        first = page * page_size
        shown = rows[first : first + page_size]
        if len(rows) > page_size:
            caption = [
                html.Div(
                    f"rows {first + 1}–{first + len(shown)} of {len(rows)} (page {page + 1} of "
                    f"{pages})",
                    className="page-caption",
                )
            ]
    head = html.Thead(html.Tr([html.Th(c, style=style) for c in columns]))
    body = html.Tbody([html.Tr([html.Td(cell, style=style) for cell in row]) for row in shown])
    return html.Div([html.Table([head, body], id=id, className="listing"), *caption])


def pager(table_id: str) -> html.Div:
    """Previous / next buttons of a paged table (their clicks move the page in the store
    ``{table_id}-page``)."""
    return html.Div(
        [
            html.Button("‹ newer", id=f"{table_id}-prev", className="pager-button"),
            html.Button("older ›", id=f"{table_id}-next", className="pager-button"),
        ],
        className="pager",
    )


def card(title: str, value: str, element_id: str | None = None, note: str = "") -> html.Div:
    props: dict[str, Any] = {"className": "card"}
    if element_id:
        props["id"] = element_id
    parts = [html.Div(title, className="card-title"), html.Div(value, className="card-value")]
    if note:
        parts.append(html.Div(note, className="card-note"))
    return html.Div(parts, **props)


def cards(items: Sequence[html.Div]) -> html.Div:
    return html.Div(list(items), className="cards")


def _template() -> dict[str, Any]:
    """plotly's "plotly_white" look as plotly.js reads it (a figure given as a plain dict, as the
    panels build them, names no template): computed once."""
    import plotly.io as pio

    layout = pio.templates["plotly_white"].to_plotly_json()["layout"]
    keep = ["colorway", "font", "hovermode", "hoverlabel", "paper_bgcolor", "plot_bgcolor"]
    keep += ["xaxis", "yaxis", "shapedefaults", "annotationdefaults"]
    return {"layout": {k: layout[k] for k in keep if k in layout}}


TEMPLATE = _template()


def figure(data: list[Figure], title: str, height: int = 300, **layout: Any) -> Figure:
    """A plotly figure as a plain dict: graph objects validate every property on construction,
    which cost more than all the RPCs of a refresh. ``layout`` overrides the shared look."""
    base: Figure = {
        "title": {"text": title, "font": {"size": 14}, "x": 0.02, "xanchor": "left"},
        "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
        "height": height,
        "template": TEMPLATE,
        "legend": {"font": {"size": 11}},
    }
    return {"data": data, "layout": {**base, **layout}}


def empty_figure(title: str, message: str, height: int = 300) -> Figure:
    return figure(
        [],
        title,
        height,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": message,
                "showarrow": False,
                "x": 0.5,
                "y": 0.5,
                "xref": "paper",
                "yref": "paper",
            }
        ],
    )
