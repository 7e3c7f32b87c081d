"""A trained Keras model as a CTranslate2 model: its weights in a TransformerSpec, quantized and written
(export.py --format ctranslate2; ct2.py translates with the result, and its docstring says how the model maps
onto the spec)."""
import os
import shutil

import numpy as np

import vocab
from ct2 import tokenizer_names
from files import file_digest

NOT_A_WORD = -1e4  # the export's output bias for <PAD> and <S>


def _linear(spec, *dense):
    """Sets a CTranslate2 Linear from Keras Dense layers: their (in, out) kernels transposed, and stacked (fused)."""
    spec.weight = np.concatenate([layer.kernel.numpy().T for layer in dense])  # (sum of outs, in)
    spec.bias = np.concatenate([layer.bias.numpy() for layer in dense])


def _norm(spec, norm):
    spec.gamma, spec.beta = norm.gamma.numpy(), norm.beta.numpy()


def _attention(spec, attention, fused_self):
    """Q, K, V fused (self-attention) or Q then K, V fused (cross-attention), the output projection, the norm."""
    if fused_self:
        _linear(spec.linear[0], attention.project_q, attention.project_k, attention.project_v)
    else:
        _linear(spec.linear[0], attention.project_q)
        _linear(spec.linear[1], attention.project_k, attention.project_v)
    _linear(spec.linear[-1], attention.project_out)
    _norm(spec.layer_norm, attention.norm)


def _feed_forward(spec, feed_forward):
    _linear(spec.linear_0, feed_forward.inner)
    _linear(spec.linear_1, feed_forward.outer)
    _norm(spec.layer_norm, feed_forward.norm)


def model_spec(model, hp, tokens, positions, epsilon):
    """A CTranslate2 TransformerSpec holding `model`'s weights.

    tokens: (source tokens, target tokens), each the vocab's strings by id;
    positions: the position table (P, C) of each side, or None for learned ones
    (the model's tables); epsilon: the layer norm's.
    """
    from ctranslate2.specs import transformer_spec

    spec = transformer_spec.TransformerSpec.from_config(hp.num_blocks, hp.num_heads,
                                                        pre_norm=hp.norm_position == "pre")
    for side, blocks, embedding, table in ((spec.encoder, model.encoder_blocks(), model.src_embedding,
                                           model.src_positions.table),
                                          (spec.decoder, model.decoder_blocks(), model.tgt_embedding,
                                           model.tgt_positions.table)):
        embeddings = side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings  # (encoder: a list)
        embeddings.weight = embedding.table.numpy()
        side.position_encodings.encodings = positions if table is None else table.numpy()
        for layer, block in zip(side.layer, blocks):
            _attention(layer.self_attention, block.self_attention, fused_self=True)
            if hasattr(block, "cross_attention"):
                _attention(layer.attention, block.cross_attention, fused_self=False)
            _feed_forward(layer.ffn, block.feed_forward)
    if hp.norm_position == "pre":
        _norm(spec.encoder.layer_norm, model.encoder_norm)
        _norm(spec.decoder.layer_norm, model.decoder_norm)
    output = model.output_projection
    if hp.share_embeddings:  # the table itself, (V, C), with the tied layer's bias
        spec.decoder.projection.weight, bias = model.tgt_embedding.table.numpy(), output.bias.numpy()
    else:
        spec.decoder.projection.weight, bias = output.kernel.numpy().T, output.bias.numpy()
    bias = bias.copy()
    bias[[vocab.PAD, vocab.BOS]] = NOT_A_WORD
    spec.decoder.projection.bias = bias
    spec.register_source_vocabulary(tokens[0])
    spec.register_target_vocabulary(tokens[1])
    spec.config.layer_norm_epsilon = epsilon
    spec.config.add_source_eos = True  # our sources end in </S>: a user passes the tokens alone
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = (
        tokens[1][vocab.UNK], tokens[1][vocab.BOS], tokens[1][vocab.EOS])
    spec.config.decoder_start_token = tokens[1][vocab.BOS]
    return spec


def write_export(spec, directory, quantization, tokenizer_files):
    """Writes the spec (quantized) and the tokenizer files into `directory` (it must not exist); returns
    export.json's "tokenizer" and "files": {file name: sha256} of the tokenizer's files and of every file,
    model.bin included, which ct2.export_record() checks before anything is loaded."""
    from ctranslate2.converters.converter import Converter

    class FromSpec(Converter):  # CTranslate2's own path: validate, quantize, save
        def _load(self):
            return spec

    FromSpec().convert(directory, quantization=quantization)
    for path in tokenizer_files:
        shutil.copy(path, directory)
    files = {name: file_digest(os.path.join(directory, name)) for name in sorted(os.listdir(directory))}
    return {"tokenizer": {name: files[name] for name in tokenizer_names(directory)}, "files": files}
