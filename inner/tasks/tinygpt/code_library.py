"""The offline code-mode proposer's library: real edits of tinygpt's code-mode script.

Data, not code: each entry is search/replace pairs of text (`inner/code_edits.py`), applied to
the incumbent script on the host as text and run only in the sandbox. With `--llm offline`,
code mode draws from these in order (rotated by the run's seed), so CI runs code mode end to end with no LLM. An
entry whose search text is no longer in the incumbent (an earlier kept edit changed it) is
rejected with its reason like any other edit, and the loop goes on.
"""

from __future__ import annotations

EDITS: list[dict] = [
    {"name": "higher-peak-lr",
     "hypothesis": "a model this small tolerates a three times higher peak learning rate, and learns faster",
     "blocks": [("        lr = LEARNING_RATE * lr_scale(min(1.0, training_time / TIME_BUDGET))\n",
                 "        lr = 3 * LEARNING_RATE * lr_scale(min(1.0, training_time / TIME_BUDGET))\n")]},
    {"name": "relu-squared",
     "hypothesis": "ReLU squared in the MLP in place of GELU: sparser, sharper activations train faster",
     "blocks": [("        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))\n",
                 "        return x + self.drop(self.out(F.relu(self.fc(self.ln2(x))).square()))\n")]},
    {"name": "embedding-norm",
     "hypothesis": "an extra LayerNorm on the token embeddings steadies the first steps",
     "blocks": [("        self.ln_f = nn.LayerNorm(n_embd)\n",
                 "        self.ln_f = nn.LayerNorm(n_embd)\n        self.ln_in = nn.LayerNorm(n_embd)\n"),
                ("        x = self.tok(idx)\n", "        x = self.ln_in(self.tok(idx))\n")]},
    {"name": "zero-init-residuals",
     "hypothesis": "residual projections start at zero, so every block begins as the identity",
     "blocks": [("                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer) if residual else 0.02)\n",
                 "                if residual:\n                    nn.init.zeros_(p)\n"
                 "                else:\n                    nn.init.normal_(p, std=0.02)\n")]},
    {"name": "cosine-cooldown",
     "hypothesis": "a cosine cooldown in place of the linear one keeps the LR high for longer",
     "blocks": [("    cool = FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * max(0.0, cool)\n",
                 "    cool = min(1.0, max(0.0, cool))\n"
                 "    cool = FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * 0.5 * (1 - math.cos(math.pi * cool))\n")]},
    {"name": "wider-init",
     "hypothesis": "a larger initial std (0.04) for the embeddings and matrices speeds up early learning",
     "blocks": [("else 0.02)\n", "else 0.04)\n")]},
]
