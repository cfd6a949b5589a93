from preprocess.dataset import DatasetInfo
from pretrain.model_config import BertConfig, flops_per_token


def test_config_for_a_preprocessed_dataset(dataset):
    info = DatasetInfo.load(str(dataset))
    c = BertConfig.for_dataset("tiny", info)
    assert c.vocab_size % 8 == 0 and info.vocab_size <= c.vocab_size < info.vocab_size + 8
    assert c.max_position_embeddings >= info.max_seq_length


def test_flops_per_token_grow_with_sequence_length_only_through_attention():
    c = BertConfig.named("large")
    short, long = flops_per_token(c, 128, 20), flops_per_token(c, 512, 80)
    # the MLM head's share is the same (20/128 == 80/512): the difference is 3 x L x 4 x (512 - 128) x H
    assert long - short == 3 * 24 * 4 * (512 - 128) * 1024


def test_training_flops_count_real_work_only():
    from pretrain.model_config import training_flops

    c = BertConfig.named("large")
    # one full row of 512 tokens and 80 predictions: what flops_per_token says per token
    assert training_flops(c, 512, 512**2, 80) == flops_per_token(c, 512, 80) * 512
    # three sequences packed in a row attend each within itself: less than one sequence of their total length
    packed = training_flops(c, 300 + 150 + 60, 300**2 + 150**2 + 60**2, 75)
    assert packed < training_flops(c, 510, 510**2, 75)
    assert training_flops(c, 510, 510**2, 75) - packed == 3 * 24 * 4 * 1024 * (510**2 - 300**2 - 150**2 - 60**2)

