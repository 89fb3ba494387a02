"""The sequence model: a stacked LSTM over the last ``seq_len`` bars of each symbol.

Follows the original specification: LSTM 128 -> 64 -> 32 (dropout 0.2 after each), dense 16 with
ReLU, 3-class output; Adam (lr 1e-3, weight decay 1e-5), batch 32, up to 100 epochs, early stopping
on validation loss (patience 10, best weights restored), ReduceLROnPlateau (factor 0.5, patience 5,
min lr 1e-6), balanced class weights. Every size is a parameter so tests can use a tiny net.

On CUDA the forward pass runs under ``torch.autocast`` (float16) with a ``GradScaler``; on CPU it runs
in float32 with fixed seeds, so CPU runs are bit-for-bit reproducible. Weights are saved as a plain
state dict and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.models.base import N_CLASSES, Model, ModelError, default_features, proba_frame
from entasis.models.datasets import Standardizer, asset_onehot, class_weights, prepare_fit, prepare_predict
from entasis.models.device import torch_device

if TYPE_CHECKING:
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

WEIGHTS_FILE = "lstm.pt"
SCALER_FILE = "scaler.npz"


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: leave torch's setting); restored afterwards.

    On a small, shared CPU box oversubscribed OpenMP threads make tiny LSTMs many times slower.
    """
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def build_net(n_in: int, n_assets: int, n_out: int, hidden: Sequence[int], dropout: float, dense: int) -> Any:
    """The network; built in a function so torch is imported only when a model is used."""
    import torch
    from torch import nn

    class StackedLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = []
            prev = n_in
            for h in hidden:
                layers.append(nn.LSTM(prev, h, batch_first=True))
                prev = h
            self.lstms = nn.ModuleList(layers)
            self.drop = nn.Dropout(dropout)
            self.head = nn.Sequential(nn.Linear(prev + n_assets, dense), nn.ReLU(), nn.Linear(dense, n_out))

        def forward(self, x: torch.Tensor, assets: torch.Tensor | None = None) -> torch.Tensor:
            for i, lstm in enumerate(self.lstms):
                x, _ = lstm(x)
                if i == len(self.lstms) - 1:
                    x = x[:, -1, :]  # the last layer returns only its final state (Keras return_sequences=False)
                x = self.drop(x)
            last = x
            if assets is not None and assets.shape[1]:
                last = torch.cat([last, assets.to(last.dtype)], dim=1)
            out: torch.Tensor = self.head(last)
            return out

    return StackedLSTM()


class TorchSeqTrainer:
    """The training loop shared by the classifier and the volatility regressor."""

    def __init__(self, *, seq_len: int, batch_size: int, max_epochs: int, lr: float, weight_decay: float,
                 patience: int, lr_patience: int, lr_factor: float, min_lr: float, grad_clip: float,
                 device: str, seed: int, eval_batch: int = 1024) -> None:
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.lr_patience = lr_patience
        self.lr_factor = lr_factor
        self.min_lr = min_lr
        self.grad_clip = grad_clip
        self.device_pref = device
        self.seed = seed
        self.eval_batch = eval_batch

    def _batch(self, z: torch.Tensor, ends: np.ndarray, onehot: torch.Tensor | None, sel: np.ndarray,
               dev: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gather the windows of one batch where ``z`` lives (on the GPU when training there)."""
        import torch

        e = torch.as_tensor(ends[sel], dtype=torch.long, device=z.device)
        idx = e[:, None] + torch.arange(-self.seq_len + 1, 1, device=z.device)[None, :]
        xb = z[idx].to(dev, non_blocking=True)
        ab = None
        if onehot is not None:
            ab = onehot[torch.as_tensor(sel, dtype=torch.long, device=onehot.device)].to(dev, non_blocking=True)
        return xb, ab

    def fit(self, net: Any, z: np.ndarray, *, train_ends: np.ndarray, train_y: np.ndarray,
            train_assets: np.ndarray | None, valid_ends: np.ndarray | None, valid_y: np.ndarray | None,
            valid_assets: np.ndarray | None, loss_fn: Callable[[Any, Any], Any],
            on_epoch: Callable[[int, float, float | None], None] | None = None) -> dict[str, list[float]]:
        """Adam + ReduceLROnPlateau + early stopping; returns per-epoch losses. Best weights restored."""
        import torch

        dev = torch_device(self.device_pref)
        amp = dev.type == "cuda"
        net.to(dev)
        # The scaled context is small (rows x features): on CUDA it goes to the GPU once and every batch's
        # windows are gathered there, so no per-batch host-to-device copies.
        zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(dev)
        ta = torch.from_numpy(train_assets).to(dev) if train_assets is not None else None
        va = torch.from_numpy(valid_assets).to(dev) if valid_assets is not None else None
        ty = torch.as_tensor(train_y).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=self.lr_factor,
                                                           patience=self.lr_patience, min_lr=self.min_lr)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        gen = torch.Generator().manual_seed(self.seed)
        hist: dict[str, list[float]] = {"train_loss": [], "valid_loss": [], "lr": []}
        best = math.inf
        best_state: dict[str, Any] | None = None
        bad_epochs = 0
        n = len(train_ends)
        for epoch in range(self.max_epochs):
            net.train()
            perm = torch.randperm(n, generator=gen).numpy()  # CPU generator: same order on any device
            total, count = 0.0, 0
            for start in range(0, n, self.batch_size):
                sel = perm[start:start + self.batch_size]
                xb, ab = self._batch(zt, train_ends, ta, sel, dev)
                yb = ty[torch.as_tensor(sel, dtype=torch.long, device=dev)]
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
                    out = net(xb, ab)
                loss = loss_fn(out.float(), yb)
                scaler.scale(loss).backward()
                if self.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                scaler.step(opt)
                scaler.update()
                total += float(loss.detach()) * len(sel)
                count += len(sel)
            train_loss = total / max(count, 1)
            valid_loss = None
            if valid_ends is not None and valid_y is not None and len(valid_ends):
                out_v = self.forward(net, zt, valid_ends, va, dev)
                valid_loss = float(loss_fn(out_v, torch.as_tensor(valid_y).to(dev)))
            monitor = valid_loss if valid_loss is not None else train_loss
            hist["train_loss"].append(train_loss)
            if valid_loss is not None:
                hist["valid_loss"].append(valid_loss)
            hist["lr"].append(float(opt.param_groups[0]["lr"]))
            if on_epoch is not None:
                on_epoch(epoch, train_loss, valid_loss)
            sched.step(monitor)
            if not math.isfinite(monitor):
                raise ModelError(f"LSTM loss became {monitor} at epoch {epoch}; lower the learning rate")
            if monitor < best - 1e-6:
                best = monitor
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                bad_epochs = 0
            else:
                bad_epochs += 1
                if bad_epochs >= self.patience:
                    log.info("early stop at epoch %d (best %.4f)", epoch, best)
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        hist["best_epoch"] = [float(int(np.argmin(hist["valid_loss"] or hist["train_loss"])))]
        return hist

    def forward(self, net: Any, zt: torch.Tensor, ends: np.ndarray, onehot: torch.Tensor | None,
                dev: torch.device) -> torch.Tensor:
        """Raw outputs (logits / values) for windows ending at ``ends``, in eval mode, float32."""
        import torch

        net.eval()
        outs = []
        with torch.inference_mode():  # no autograd bookkeeping at all (lighter than no_grad)
            for start in range(0, len(ends), self.eval_batch):
                sel = np.arange(start, min(start + self.eval_batch, len(ends)))
                xb, ab = self._batch(zt, ends, onehot, sel, dev)
                with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                    outs.append(net(xb, ab).float())
        return torch.cat(outs) if outs else torch.zeros((0, 1))


class LSTMModel(Model):
    """Stacked-LSTM direction classifier (see the module docstring; contract in ``entasis.models.base``)."""

    kind = "lstm"

    def __init__(self, *, features: Sequence[str] | None = None, pooled: bool = True, seed: int = 42,
                 seq_len: int = 90, hidden: Sequence[int] = (128, 64, 32), dropout: float = 0.2,
                 dense: int = 16, lr: float = 1e-3, weight_decay: float = 1e-5, batch_size: int = 32,
                 max_epochs: int = 100, patience: int = 10, lr_patience: int = 5, lr_factor: float = 0.5,
                 min_lr: float = 1e-6, grad_clip: float = 1.0, use_class_weights: bool = False,
                 device: str = "auto", num_threads: int | None = None) -> None:
        super().__init__(features=features, pooled=pooled, seed=seed)
        if seq_len < 1 or not hidden or any(h < 1 for h in hidden):
            raise ModelError(f"LSTM needs seq_len >= 1 and positive hidden sizes; got {seq_len}, {hidden}")
        if not 0 <= dropout < 1:
            raise ModelError(f"dropout must be in [0, 1); got {dropout}")
        self.seq_len = int(seq_len)
        self.hidden = [int(h) for h in hidden]
        self.dropout = float(dropout)
        self.dense = int(dense)
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.lr_patience = int(lr_patience)
        self.lr_factor = lr_factor
        self.min_lr = min_lr
        self.grad_clip = grad_clip
        self.use_class_weights = use_class_weights
        self.device = device
        self.num_threads = num_threads
        self.scaler = Standardizer()
        self.net: Any = None

    @property
    def min_history(self) -> int:
        return self.seq_len

    def get_params(self) -> dict[str, Any]:
        return {"features": self.features, "pooled": self.pooled, "seed": self.seed, "seq_len": self.seq_len,
                "hidden": list(self.hidden), "dropout": self.dropout, "dense": self.dense, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "max_epochs": self.max_epochs, "patience": self.patience, "lr_patience": self.lr_patience,
                "lr_factor": self.lr_factor, "min_lr": self.min_lr, "grad_clip": self.grad_clip,
                "use_class_weights": self.use_class_weights, "device": self.device,
                "num_threads": self.num_threads}

    def _trainer(self) -> TorchSeqTrainer:
        return TorchSeqTrainer(seq_len=self.seq_len, batch_size=self.batch_size, max_epochs=self.max_epochs,
                               lr=self.lr, weight_decay=self.weight_decay, patience=self.patience,
                               lr_patience=self.lr_patience, lr_factor=self.lr_factor, min_lr=self.min_lr,
                               grad_clip=self.grad_clip, device=self.device, seed=self.seed)

    def _new_net(self) -> Any:
        import torch

        torch.manual_seed(self.seed)
        assert self.features is not None
        return build_net(len(self.features), len(self.assets), N_CLASSES, self.hidden, self.dropout, self.dense)

    def fit(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None = None,
            history: pd.DataFrame | None = None,
            on_epoch: Callable[[int, float, float | None], None] | None = None) -> LSTMModel:
        import torch

        self.features = list(self.features or default_features(train))
        self.scaler = Standardizer()
        prep = prepare_fit(features=self.features, scaler=self.scaler, min_history=self.min_history,
                           train=train, target=target, valid=valid, history=history)
        ctx = prep.ctx
        assert ctx.target is not None
        tr = prep.samples["train"]
        self.assets = sorted(set(ctx.symbols[tr])) if self.pooled else []
        y = ctx.target[tr].astype(np.int64)
        w = class_weights(y) if self.use_class_weights else np.ones(N_CLASSES)
        self.target = target
        self.net = self._new_net()
        va = prep.samples.get("valid")
        oh = (lambda p: asset_onehot(ctx.symbols[p], self.assets)) if self.assets else (lambda p: None)
        weight = torch.as_tensor(w, dtype=torch.float32)

        def loss_fn(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(out, yb, weight=weight.to(out.device))

        with torch_threads(self.num_threads):
            self.history_ = self._trainer().fit(
                self.net, prep.z, train_ends=tr, train_y=y, train_assets=oh(tr),
                valid_ends=va if va is not None and len(va) else None,
                valid_y=ctx.target[va].astype(np.int64) if va is not None and len(va) else None,
                valid_assets=oh(va) if va is not None and len(va) else None, loss_fn=loss_fn, on_epoch=on_epoch)
        self.net.to("cpu")
        self.fitted = True
        return self

    def predict_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None) -> pd.DataFrame:
        import torch

        self._require_fitted()
        assert self.features is not None
        prep = prepare_predict(features=self.features, scaler=self.scaler, min_history=self.min_history,
                               rows=rows, history=history)
        s = prep.samples["rows"]
        if not len(s):
            return proba_frame(rows.index, s, np.zeros((0, N_CLASSES)))
        dev = torch_device(self.device)
        self.net.to(dev)
        oh = torch.from_numpy(asset_onehot(prep.ctx.symbols[s], self.assets)) if self.assets else None
        with torch_threads(self.num_threads):
            logits = self._trainer().forward(self.net, torch.from_numpy(prep.z), s, oh, dev)
        proba = torch.softmax(logits.double(), dim=1).cpu().numpy()
        return proba_frame(rows.index, prep.ctx.positions_of("rows", rows.index, s), proba)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (the network class is built inside a function): the net travels as its state dict,
        e.g. back from a walk-forward worker process."""
        st = self.__dict__.copy()
        if self.net is not None:
            st["net"] = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        return st

    def __setstate__(self, st: dict[str, Any]) -> None:
        sd = st.pop("net", None)
        self.__dict__.update(st)
        self.net = None
        if sd is not None:
            self.net = self._new_net()
            self.net.load_state_dict(sd)
            self.net.eval()

    def _save_state(self, path: Path) -> None:
        import torch

        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, path / WEIGHTS_FILE)
        self.scaler.save(path / SCALER_FILE)

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        import torch

        self.scaler = Standardizer.load(path / SCALER_FILE)
        self.net = self._new_net()
        sd = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        self.net.load_state_dict(sd)
        self.net.eval()
