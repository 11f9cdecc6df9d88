"""Reference trainer step: Parquet in; MLflow run, checkpoints, predictions and a result JSON out.

Runs inside a pod or a local process, never imports Airflow. scikit-learn by default; a PyTorch MLP with
``--framework torch`` (or ``auto`` when torch is installed): CUDA when available, mixed precision on GPU,
DistributedDataParallel when ``WORLD_SIZE`` > 1.

Resume: every epoch writes a checkpoint under ``$MLOPS_CHECKPOINT_URI``; a new try starts from the latest
one and logs into the same MLflow run (``$MLFLOW_RUN_ID``), continuing the metric steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_mlops.steps import artifacts, contract


class BadInput(Exception):
    """The step's input is wrong (missing column, unreadable data): exit EXIT_BAD_INPUT, never retry."""


@dataclass
class TrainConfig:
    """Everything the trainer needs, from args and env."""

    train_uri: str
    test_uri: str
    label: str = "target"
    framework: str = "auto"
    epochs: int = 20
    learning_rate: float = 0.01
    batch_size: int = 64
    hidden: int = 64
    seed: int = 42
    checkpoint_uri: str | None = None
    output_uri: str | None = None
    result_uri: str | None = None
    extra_params: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        """Hyperparameters logged to MLflow (URIs go to tags, not params)."""
        keep = ("framework", "epochs", "learning_rate", "batch_size", "hidden", "seed", "label")
        return {k: v for k, v in asdict(self).items() if k in keep} | self.extra_params


class CheckpointStore:
    """Numbered checkpoints plus a ``latest.json`` pointer; the pointer is written last, so it is never torn."""

    def __init__(self, uri: str | None, suffix: str, keep: int = 2) -> None:
        self.uri = uri.rstrip("/") if uri else None
        self.suffix = suffix
        self.keep = keep

    def latest(self) -> tuple[int, bytes] | None:
        """(epoch, payload) of the newest checkpoint, or None."""
        if not self.uri or not artifacts.exists(f"{self.uri}/latest.json"):
            return None
        pointer = artifacts.read_json(f"{self.uri}/latest.json")
        return int(pointer["epoch"]), artifacts.read_bytes(f"{self.uri}/{pointer['file']}")

    def save(self, epoch: int, payload: bytes) -> None:
        """Write the checkpoint for ``epoch`` (0-based, completed) and move the pointer to it."""
        if not self.uri:
            return
        name = f"ckpt-{epoch:05d}.{self.suffix}"
        artifacts.write_bytes(f"{self.uri}/{name}", payload)
        artifacts.write_json(f"{self.uri}/latest.json", {"epoch": epoch, "file": name})


def load_data(cfg: TrainConfig) -> tuple[Any, Any, Any, Any, list[str]]:
    """Read train/test Parquet and split features from the label; BadInput names what is wrong.

    Features stay frames with the columns and dtypes the Parquet has: that is the input the model's signature
    declares (DESIGN 3.9), and what batch scoring and the scoring server are given.
    """
    frames = []
    for role, uri in (("train", cfg.train_uri), ("test", cfg.test_uri)):
        if not uri:
            raise BadInput(f"no {role} dataset URI: pass --{role}-uri or set ${contract.TRAIN_DATA_URI}")
        try:
            frames.append(artifacts.read_parquet(uri))
        except (OSError, ValueError) as err:
            raise BadInput(f"cannot read the {role} dataset {uri}: {err}") from err
    train, test = frames
    for role, frame in (("train", train), ("test", test)):
        if cfg.label not in frame.columns:
            raise BadInput(f"label column {cfg.label!r} is missing from the {role} dataset "
                           f"(columns: {', '.join(map(str, frame.columns[:12]))}...)")
    features = [c for c in train.columns if c != cfg.label]
    missing = sorted(set(features) - set(test.columns))
    if missing:
        raise BadInput(f"test dataset lacks feature columns {missing}")
    return (train[features], train[cfg.label].to_numpy(), test[features], test[cfg.label].to_numpy(), features)


def model_signature(x_example: Any, proba_example: Any) -> Any:
    """The signature every flavour logs: the frame's named columns and dtypes in, class probabilities out."""
    from mlflow.models import infer_signature

    from airflow_mlops.steps.signature import InputContract

    signature = infer_signature(x_example, proba_example)
    logged = InputContract.from_signature(signature)
    if logged != InputContract.from_frame(x_example):  # MLflow maps dtypes itself: never log a different contract
        raise RuntimeError(f"the inferred signature {signature.inputs} does not match the training frame's "
                           f"columns and dtypes {InputContract.from_frame(x_example).to_dict()}")
    return signature


def evaluate(y_true: Any, proba: Any, classes: Any, prefix: str) -> dict[str, float]:
    """Accuracy, macro F1, ROC AUC and log loss from class probabilities."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    y_pred = classes[np.argmax(proba, axis=1)]
    metrics = {
        f"{prefix}_accuracy": float(accuracy_score(y_true, y_pred)),
        f"{prefix}_f1": float(f1_score(y_true, y_pred, average="macro")),
        f"{prefix}_log_loss": float(log_loss(y_true, proba, labels=classes)),
    }
    try:
        auc = roc_auc_score(y_true, proba[:, 1]) if len(classes) == 2 else \
            roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
        metrics[f"{prefix}_roc_auc"] = float(auc)
    except ValueError:
        pass  # one class only in y_true: AUC undefined
    return metrics


class SklearnTrainer:
    """Standardise + SGD logistic regression, trained epoch by epoch with partial_fit so it can checkpoint."""

    suffix = "joblib"

    def __init__(self, cfg: TrainConfig, x: Any, y: Any) -> None:
        import numpy as np
        from sklearn.linear_model import SGDClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        self.cfg = cfg
        self.classes = np.unique(y)
        # Fitted on the named frame: the pipeline checks column names itself when it scores one.
        scaler = StandardScaler().fit(x)
        clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=cfg.learning_rate,
                            alpha=1e-4, random_state=cfg.seed)
        self.model = Pipeline([("scale", scaler), ("clf", clf)])
        self.x, self.y = np.asarray(scaler.transform(x)), y
        self.device = "cpu"

    def fit_epoch(self, epoch: int) -> float:
        import numpy as np
        from sklearn.metrics import log_loss

        order = np.random.default_rng(self.cfg.seed + epoch).permutation(len(self.y))
        clf = self.model.named_steps["clf"]
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]
            clf.partial_fit(self.x[idx], self.y[idx], classes=self.classes)
        return float(log_loss(self.y, clf.predict_proba(self.x), labels=self.classes))

    def predict_proba(self, x: Any) -> Any:
        return self.model.predict_proba(x)

    def state(self) -> bytes:
        import joblib

        buffer = io.BytesIO()
        joblib.dump(self.model, buffer)
        return buffer.getvalue()

    def restore(self, payload: bytes) -> None:
        import joblib

        self.model = joblib.load(io.BytesIO(payload))

    def log_model(self, x_example: Any) -> str:
        import mlflow

        signature = model_signature(x_example, self.predict_proba(x_example))
        # Serve probabilities, like the torch model, so every consumer (checks, rollout probes) sees one contract.
        info = mlflow.sklearn.log_model(self.model, name="model", signature=signature, input_example=x_example,
                                        pyfunc_predict_fn="predict_proba")
        return str(info.model_uri)


class TorchTrainer:
    """MLP classifier; CUDA + mixed precision when available, DDP when WORLD_SIZE > 1."""

    suffix = "pt"

    def __init__(self, cfg: TrainConfig, x: Any, y: Any, rank: int, world: int) -> None:
        import numpy as np
        import torch
        from torch import nn

        torch.manual_seed(cfg.seed)
        self.cfg, self.rank, self.world = cfg, rank, world
        self.columns = [str(c) for c in x.columns]
        x = x.to_numpy("float32")
        self.classes = np.unique(y)
        self.cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if self.cuda else "cpu")
        self.mean = torch.tensor(x.mean(axis=0), dtype=torch.float32)
        self.std = torch.tensor(x.std(axis=0) + 1e-6, dtype=torch.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        self.x = ((torch.tensor(x) - self.mean) / self.std).to(self.device)
        self.y = torch.tensor([index[v] for v in y], dtype=torch.long, device=self.device)
        self.net = nn.Sequential(nn.Linear(x.shape[1], cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden),
                                 nn.ReLU(), nn.Linear(cfg.hidden, len(self.classes))).to(self.device)
        self.model: Any = self.net
        if world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if self.cuda else "gloo", rank=rank, world_size=world)
            self.model = nn.parallel.DistributedDataParallel(self.net)
        self.optim = torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate)
        # bf16 needs no loss scaling; fp16 (older GPUs) does.
        self.amp_dtype = (torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() else torch.float16)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and self.amp_dtype == torch.float16)

    def fit_epoch(self, epoch: int) -> float:
        import torch
        from torch.nn import functional

        generator = torch.Generator().manual_seed(self.cfg.seed + epoch)
        order = torch.randperm(len(self.y), generator=generator)[self.rank::self.world].to(self.device)
        self.model.train()
        total, count = 0.0, 0
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]
            self.optim.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cuda):
                loss = functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        if self.cuda:
            torch.cuda.synchronize()
        return total / max(count, 1)

    def predict_proba(self, x: Any) -> Any:
        import torch

        self.net.eval()
        with torch.no_grad():
            xt = ((torch.tensor(x[self.columns].to_numpy("float32")) - self.mean) / self.std).to(self.device)
            # float64 like scikit-learn's predict_proba and the served model's output
            return torch.softmax(self.net(xt).float(), dim=1).double().cpu().numpy()

    def state(self) -> bytes:
        import torch

        buffer = io.BytesIO()
        torch.save({"net": self.net.state_dict(), "optim": self.optim.state_dict(),
                    "scaler": self.scaler.state_dict()}, buffer)
        return buffer.getvalue()

    def restore(self, payload: bytes) -> None:
        import torch

        state = torch.load(io.BytesIO(payload), map_location=self.device, weights_only=True)
        self.net.load_state_dict(state["net"])
        self.optim.load_state_dict(state["optim"])
        self.scaler.load_state_dict(state["scaler"])

    def export(self) -> Any:
        """A self-contained CPU module of built-in layers: standardisation folded into the first Linear, softmax out."""
        import copy

        import torch
        from torch import nn

        net = copy.deepcopy(self.net).float().cpu().eval()
        first: Any = net[0]
        with torch.no_grad():
            weight = first.weight / self.std
            first.bias.copy_(first.bias - weight @ self.mean)
            first.weight.copy_(weight)
        return nn.Sequential(*net, nn.Softmax(dim=1))

    def log_model(self, x_example: Any) -> str:
        """Log the exported network as a pyfunc model from code (``steps/torch_model.py``): a layer spec and a
        state dict, never a pickled module; it takes the signature's named columns and casts to float32 itself."""
        import tempfile

        import mlflow
        import torch

        from airflow_mlops.steps import torch_model

        signature = model_signature(x_example, self.predict_proba(x_example))
        net = self.export()
        with tempfile.TemporaryDirectory() as tmp:
            spec_path, weights_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "weights.pt")
            with open(spec_path, "w", encoding="utf-8") as f:
                json.dump({"columns": self.columns, "layers": torch_model.describe_network(net),
                           "classes": [c.item() if hasattr(c, "item") else c for c in self.classes]}, f, indent=1)
            torch.save(net.state_dict(), weights_path)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=torch_model.__file__, signature=signature, input_example=x_example,
                artifacts={torch_model.SPEC_ARTIFACT: spec_path, torch_model.WEIGHTS_ARTIFACT: weights_path})
        return str(info.model_uri)

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def resolve_framework(name: str) -> str:
    """``auto`` means torch when it is installed, scikit-learn otherwise."""
    if name == "auto":
        return "torch" if importlib.util.find_spec("torch") else "sklearn"
    if name == "torch" and not importlib.util.find_spec("torch"):
        raise BadInput("--framework torch, but torch is not installed (install airflow-mlops[torch])")
    return name


def write_predictions(output_uri: str, split: str, y_true: Any, proba: Any, classes: Any) -> str:
    """Predictions and per-class probabilities as Parquet, the input model checks consume."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"y_true": y_true, "y_pred": classes[np.argmax(proba, axis=1)]})
    for i, cls in enumerate(classes):
        frame[f"proba_{cls}"] = proba[:, i]
    uri = f"{output_uri.rstrip('/')}/predictions/{split}.parquet"
    artifacts.write_parquet(frame, uri)
    return uri


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, checkpointing every epoch and resuming from the latest; return the result record."""
    import mlflow

    rank = int(os.environ.get(contract.NODE_RANK, "0") or 0)
    world = int(os.environ.get(contract.WORLD_SIZE, "1") or 1)
    x_train, y_train, x_test, y_test, features = load_data(cfg)
    framework = resolve_framework(cfg.framework)
    if framework == "sklearn" and rank > 0:
        print(f"rank {rank}: scikit-learn trains on rank 0 only; nothing to do")
        return {"status": "skipped", "rank": rank}
    trainer: Any = (TorchTrainer(cfg, x_train, y_train, rank, world) if framework == "torch"
                    else SklearnTrainer(cfg, x_train, y_train))
    store = CheckpointStore(cfg.checkpoint_uri, trainer.suffix)
    resumed = store.latest()
    start = 0
    if resumed:
        trainer.restore(resumed[1])
        start = resumed[0] + 1
        print(f"resuming from checkpoint {cfg.checkpoint_uri} at epoch {start}/{cfg.epochs}")
    lead = rank == 0
    run = mlflow.start_run(run_id=os.environ.get(contract.MLFLOW_RUN_ID) or None) if lead else None
    try:
        if run is not None:
            mlflow.log_params(cfg.params() | {"n_features": len(features), "train_rows": len(y_train)})
            mlflow.set_tags({"mlops.framework": framework, "mlops.device": str(trainer.device),
                             "mlops.train_uri": cfg.train_uri, "mlops.test_uri": cfg.test_uri,
                             "mlops.label_column": cfg.label, "mlops.world_size": str(world)})
            if resumed:
                mlflow.set_tag("mlops.resumed_from_epoch", str(start))
        print(f"training {framework} on {trainer.device} (world size {world}) for epochs {start}..{cfg.epochs - 1}")
        epoch_times = []
        for epoch in range(start, cfg.epochs):
            began = time.perf_counter()
            loss = trainer.fit_epoch(epoch)
            epoch_times.append(time.perf_counter() - began)
            if lead:
                # Metrics before the checkpoint: a crash in between repeats the epoch, never loses its metrics.
                mlflow.log_metrics({"train_loss": loss, "epoch_seconds": epoch_times[-1]}, step=epoch)
                store.save(epoch, trainer.state())
                print(f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} ({epoch_times[-1]:.3f}s), checkpoint saved")
        if not lead:
            return {"status": "ok", "rank": rank}
        proba_train, proba_test = trainer.predict_proba(x_train), trainer.predict_proba(x_test)
        metrics = evaluate(y_train, proba_train, trainer.classes, "train")
        metrics |= evaluate(y_test, proba_test, trainer.classes, "test")
        mlflow.log_metrics(metrics)
        model_uri = trainer.log_model(x_test.head(5))
        fault_percent = int(cfg.extra_params.get("fault_percent") or 0)
        if fault_percent:  # demo switch: a model that is fine offline and fails at serving time
            from airflow_mlops.steps.fault_injection import log_fault_injecting_model

            model_uri = log_fault_injecting_model(model_uri, fault_percent)
        predictions = {}
        if cfg.output_uri:
            predictions = {
                "train": write_predictions(cfg.output_uri, "train", y_train, proba_train, trainer.classes),
                "test": write_predictions(cfg.output_uri, "test", y_test, proba_test, trainer.classes),
            }
        assert run is not None
        result = {
            "status": "ok",
            "framework": framework,
            "device": str(trainer.device),
            "mlflow_run_id": run.info.run_id,
            "mlflow_experiment_id": run.info.experiment_id,
            "model_uri": model_uri,
            "metrics": metrics,
            "epochs": cfg.epochs,
            "resumed_from_epoch": start if resumed else None,
            "mean_epoch_seconds": (sum(epoch_times) / len(epoch_times)) if epoch_times else None,
            "predictions": predictions,
            "checkpoint_uri": cfg.checkpoint_uri,
            "classes": [c.item() if hasattr(c, "item") else c for c in trainer.classes],
        }
        print("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
        return result
    finally:
        if run is not None:
            mlflow.end_run(status="FINISHED" if sys.exc_info()[0] is None else "FAILED")
        if hasattr(trainer, "close"):
            trainer.close()


def parse_args(argv: list[str] | None) -> TrainConfig:
    """Build the config from args, falling back to the orchestrator's env contract."""
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-uri", default=env.get(contract.TRAIN_DATA_URI, ""))
    parser.add_argument("--test-uri", default=env.get(contract.TEST_DATA_URI, ""))
    parser.add_argument("--label", default=env.get(contract.LABEL_COLUMN, "target"))
    parser.add_argument("--framework", choices=("auto", "sklearn", "torch"), default="auto")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    params = json.loads(env.get(contract.PARAMS) or "{}")
    values = {k: params.pop(k) for k in list(params) if k in ("epochs", "learning_rate", "batch_size", "hidden",
                                                                  "seed", "framework")}
    cfg = TrainConfig(train_uri=args.train_uri, test_uri=args.test_uri, label=args.label,
                      framework=values.get("framework", args.framework), epochs=int(values.get("epochs", args.epochs)),
                      learning_rate=float(values.get("learning_rate", args.learning_rate)),
                      batch_size=int(values.get("batch_size", args.batch_size)),
                      hidden=int(values.get("hidden", args.hidden)), seed=int(values.get("seed", args.seed)),
                      checkpoint_uri=env.get(contract.CHECKPOINT_URI), output_uri=env.get(contract.OUTPUT_URI),
                      result_uri=env.get(contract.RESULT_URI), extra_params=params)
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.learning_rate <= 0:
        raise BadInput(f"epochs and batch_size must be >= 1 and learning_rate > 0 (got epochs={cfg.epochs}, "
                       f"batch_size={cfg.batch_size}, learning_rate={cfg.learning_rate})")
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, EXIT_BAD_INPUT on bad input (never retried), 1 on other errors."""
    try:
        cfg = parse_args(argv)
        result = train(cfg)
    except BadInput as err:
        print(f"error: bad input: {err}", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    if cfg.result_uri and result.get("status") == "ok" and "mlflow_run_id" in result:
        artifacts.write_json(cfg.result_uri, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
