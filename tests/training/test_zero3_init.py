"""ZeRO 3 partitions the base model while it loads; ZeRO 0, 2 and 3 train to the same losses.

One `deepspeed` launch with two CPU ranks runs the job three times (ZeRO 0, 2, 3) in the same
processes, which saves two launcher start-ups.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from connector.training_job import deepspeed_launcher
from illume.ports import free_port

REPO = Path(__file__).resolve().parents[2]

RANK_SCRIPT = '''
import json, math, sys
from pathlib import Path
import torch
from training.config import TrainConfig
from training.job import Trainer
from training.model import SafetensorsFile, safetensors_files

export, model, out = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
checks = {}
for stage in (0, 2, 3):
    config = TrainConfig(export=export, base_model=model, out=f"{out}/zero{stage}", batch_size=2, lr=5e-3, seed=3,
                         epochs=1, zero=stage)
    trainer = Trainer(config)
    if stage == 3:
        import deepspeed
        world = trainer.world
        base = {n: p for n, p in trainer.engine.module.named_parameters() if not p.requires_grad}
        reader = SafetensorsFile(safetensors_files(Path(model))[0])
        name = "language_model.model.layers.1.mlp.down_proj.weight"  # checkpoint layout (legacy LLaVA keys)
        param = next(p for n, p in base.items() if n.endswith("language_model.layers.1.mlp.down_proj.base_layer.weight"))
        checks["partitioned"] = all(p.ds_tensor.numel() == math.ceil(p.ds_numel / world) for p in base.values())
        checks["local_numel"] = sum(p.ds_tensor.numel() for p in base.values())
        checks["full_numel"] = sum(p.ds_numel for p in base.values())
        with deepspeed.zero.GatheredParameters([param]):
            expected = reader.read(name, 0, reader.numel(name)).view_as(param)
            checks["weights_match_checkpoint"] = bool(torch.equal(param.data, expected))
    trainer.train()
if trainer.rank == 0:
    Path(out, "checks.json").write_text(json.dumps(checks))
'''


def test_zero3_loads_partitioned_and_stages_agree_on_losses(tmp_path, export_dir, tiny_model_dir):
    script = tmp_path / "stages.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "runs"
    command = [deepspeed_launcher(), "--num_gpus", "2", "--master_port", str(free_port()), str(script),
               str(export_dir), str(tiny_model_dir("llava")), str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    checks = json.loads((out / "checks.json").read_text())
    assert checks["partitioned"] and checks["weights_match_checkpoint"]
    assert checks["local_numel"] * 2 <= checks["full_numel"] + 1000  # each rank holds about half the base model
    for rank in (0, 1):
        losses = {stage: json.loads((out / f"zero{stage}" / "ranks" / f"rank_{rank}.json").read_text())["losses"]
                  for stage in (0, 2, 3)}
        assert len(losses[0]) == 3  # 12 rows / (2 ranks x batch 2)
        for stage in (2, 3):
            assert max(abs(a - b) for a, b in zip(losses[0], losses[stage])) < 1e-4, (stage, losses)
    weights = {json.loads((out / "zero3" / "ranks" / f"rank_{r}.json").read_text())["trainable_sha256"] for r in (0, 1)}
    assert len(weights) == 1  # the adapter was gathered identically on both ranks
    assert (out / "zero3" / "adapter" / "adapter_model.safetensors").is_file()
