"""``entasis sim-exchange serve``: run the simulated exchange in the foreground until Ctrl-C.

Point collectors at it with ``ENTASIS_SIM_URL=http://127.0.0.1:<port>``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from entasis.domain import utc_timestamp

DEFAULT_PORT = 8765


def pd_ts(ms: int) -> object:
    """A UTC timestamp from ms (pandas imported only when crashes are printed)."""
    import pandas as pd

    return pd.Timestamp(ms, unit="ms", tz="UTC")


def register(app: typer.Typer) -> None:
    sim_app = typer.Typer(help="The simulated exchange (Binance, Bybit, Deribit endpoints, offline).",
                          no_args_is_help=True)
    app.add_typer(sim_app, name="sim-exchange")

    @sim_app.command("serve")
    def serve(
        port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port (0: any free port)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
        seed: int = typer.Option(7, "--seed", help="Simulation seed: same seed, same market."),
        replay: Path | None = typer.Option(  # noqa: B008 - typer's idiom
            None, "--replay", help="Directory of candle CSVs to serve as-is on the spot kline endpoints.",
            exists=True, file_okay=False, dir_okay=True,
        ),
        symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated, e.g. BTC/USDT,ETH/USDT."),
        start: str = typer.Option("2022-01-01", "--start", help="First simulated time (UTC)."),
        end: str = typer.Option("2024-01-01", "--end", help="Last simulated time (UTC); 'now' defaults to it."),
        now: str | None = typer.Option(None, "--now", help="The exchange's clock (default: --end)."),
        live: bool = typer.Option(False, "--live", help="Let the exchange's clock follow the wall clock (for "
                                  "Airflow's scheduler); --end must then lie in the future."),
        flash_crashes: int = typer.Option(0, "--flash-crashes", help="Inject this many flash crashes (spread over "
                                          "--start..--end, reproducible from --flash-seed)."),
        flash_seed: int = typer.Option(1, "--flash-seed", help="Seed of the injected flash crashes."),
    ) -> None:
        """Serve simulated (or replayed) market data on loopback until interrupted."""
        import signal
        import threading

        from rich.console import Console

        from entasis.sim.exchange import start_server
        from entasis.sim.market import MarketSim
        from entasis.sim.replay import ReplayFormatError

        console = Console()
        try:
            sym_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
            t_start, t_end = utc_timestamp(start, "--start"), utc_timestamp(end, "--end")
            t_now = None if now is None else utc_timestamp(now, "--now")
            if live:
                import pandas as pd

                t_now = pd.Timestamp.now(tz="UTC")
                if t_end <= t_now:
                    raise ValueError(f"--live needs --end in the future; got {end}")
            market = MarketSim(seed=seed, symbols=sym_list, start=t_start, end=t_end, now=t_now)
            crashes = market.inject_flash_crashes(flash_crashes, seed=flash_seed) if flash_crashes else []
            server = start_server(seed=seed, host=host, port=port, replay_dir=replay, market=market)
        except (ValueError, ReplayFormatError, OSError) as e:
            console.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(code=1) from None
        console.print(f"simulated exchange on [bold]{server.url}[/] (seed {seed}, now {market.now:%Y-%m-%d %H:%M} UTC"
                      + (f", replaying {replay}" if replay else "") + "); Ctrl-C stops it")
        for c in crashes:
            console.print(f"  flash crash: {c.asset} at {pd_ts(c.start):%Y-%m-%d %H:%M} UTC, -{100 * c.depth:.1f}% "
                          f"over {c.fall_minutes} min, volume x{c.volume_mult}")
        console.print(f"  binance {server.url}/binance/api/v3/klines  bybit {server.url}/bybit/v5/market/kline  "
                      f"deribit {server.url}/deribit/api/v2/public/get_instruments")
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            while not done.wait(0.5):
                if live:
                    import pandas as pd

                    market.now = min(pd.Timestamp.now(tz="UTC"), market.end)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            console.print("stopped")
