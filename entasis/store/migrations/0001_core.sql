-- Core schemas and the tables of DESIGN.md. Natural-key primary keys, timestamptz everywhere.
CREATE SCHEMA IF NOT EXISTS market;
CREATE SCHEMA IF NOT EXISTS features;
CREATE SCHEMA IF NOT EXISTS ml;

CREATE TABLE market.instruments (
    exchange     text NOT NULL,
    symbol       text NOT NULL,
    market_type  text NOT NULL DEFAULT 'spot',   -- spot | swap | option
    base         text,
    quote        text,
    active       boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, symbol)
);

CREATE TABLE market.candles (
    exchange      text NOT NULL,
    symbol        text NOT NULL,
    timeframe     text NOT NULL,
    ts            timestamptz NOT NULL,
    open          double precision NOT NULL,
    high          double precision NOT NULL,
    low           double precision NOT NULL,
    close         double precision NOT NULL,
    volume        double precision NOT NULL,
    quote_volume  double precision,
    PRIMARY KEY (exchange, symbol, timeframe, ts)
);

CREATE TABLE market.funding_rates (
    exchange      text NOT NULL,
    symbol        text NOT NULL,
    ts            timestamptz NOT NULL,
    funding_rate  double precision NOT NULL,
    mark_price    double precision,
    PRIMARY KEY (exchange, symbol, ts)
);

CREATE TABLE market.open_interest (
    exchange             text NOT NULL,
    symbol               text NOT NULL,
    ts                   timestamptz NOT NULL,
    open_interest        double precision NOT NULL,   -- in contracts / base units
    open_interest_value  double precision,            -- in quote currency
    PRIMARY KEY (exchange, symbol, ts)
);

CREATE TABLE market.option_quotes (
    exchange          text NOT NULL,
    instrument        text NOT NULL,
    snapshot_ts       timestamptz NOT NULL,
    underlying        text NOT NULL,
    expiry            timestamptz NOT NULL,
    strike            double precision NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('call', 'put')),
    bid               double precision,
    ask               double precision,
    mark_price        double precision,
    mark_iv           double precision,
    delta             double precision,
    gamma             double precision,
    vega              double precision,
    theta             double precision,
    underlying_price  double precision,
    open_interest     double precision,
    PRIMARY KEY (exchange, instrument, snapshot_ts)
);

CREATE TABLE market.sentiment (
    source  text NOT NULL,
    ts      timestamptz NOT NULL,
    value   double precision NOT NULL,
    PRIMARY KEY (source, ts)
);

CREATE TABLE market.ingest_state (
    source     text NOT NULL,            -- candles | funding | open_interest | options
    exchange   text NOT NULL,
    symbol     text NOT NULL,
    timeframe  text NOT NULL DEFAULT '',
    watermark  timestamptz,
    last_run   timestamptz,
    status     text NOT NULL DEFAULT 'never',
    message    text,
    PRIMARY KEY (source, exchange, symbol, timeframe)
);

CREATE TABLE market.quarantine (
    source          text NOT NULL,
    exchange        text NOT NULL,
    symbol          text NOT NULL,
    timeframe       text NOT NULL DEFAULT '',
    ts              timestamptz NOT NULL,
    reason          text NOT NULL,
    payload         jsonb NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, exchange, symbol, timeframe, ts, reason)
);

CREATE TABLE market.gaps (
    source       text NOT NULL,
    exchange     text NOT NULL,
    symbol       text NOT NULL,
    timeframe    text NOT NULL DEFAULT '',
    gap_start    timestamptz NOT NULL,
    gap_end      timestamptz NOT NULL,
    missing_bars integer NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    PRIMARY KEY (source, exchange, symbol, timeframe, gap_start)
);

CREATE TABLE ml.predictions (
    asset             text NOT NULL,
    horizon           integer NOT NULL,
    as_of             timestamptz NOT NULL,
    model_version     text NOT NULL,
    predicted_class   smallint NOT NULL CHECK (predicted_class IN (0, 1, 2)),
    p_bearish         double precision NOT NULL,
    p_neutral         double precision NOT NULL,
    p_bullish         double precision NOT NULL,
    confidence        double precision NOT NULL,
    confidence_level  text NOT NULL CHECK (confidence_level IN ('low', 'medium', 'high')),
    target_date       timestamptz NOT NULL,
    factors           jsonb,
    run_id            text,
    data_hash         text,
    published_at      timestamptz NOT NULL,
    actual_class      smallint,
    realized_return   double precision,
    correct           boolean,
    PRIMARY KEY (asset, horizon, as_of, model_version)
);
