"""The loaders of every task in the paper: on the real files where present (exact counts,
first and last examples as read with head/tail; conftest.real_data says where they are
looked for), on small files written here in each official format, and their errors."""
import json
import os
from collections import Counter

import pytest

import datasets
from conftest import real_data
from datasets import (LABELS, Split, cola, mnli, mrpc, qnli, qqp, race, rte, scitail, snli,
                      sst2, stsb, user_csv, wnli)


def tasks_dir(*parts):
    """The folder laid out as ../shared/data/tasks (glue/<TASK>/, RACE/, ...) that has
    <parts>, from the places conftest.real_data looks in; skips the test when none has."""
    path = real_data('tasks', *parts)
    return path[:-len(os.path.join('', *parts))]


def example(split, i):
    """(fields, label, index) of example i, as the tables below write them."""
    return (tuple(field[i] for field in split.fields),
            None if split.labels is None else split.labels[i],
            None if split.index is None else split.index[i])


# loader, split, file under glue/, rows, label counts by class id (from SOURCES.md),
# first example, last example.
GLUE_FILES = [
    (cola, 'train', 'CoLA/train.tsv', 8551, {0: 2528, 1: 6023},
     (("Our friends won't buy this analysis, let alone the next one we propose.",),
      1, None),
     (('What all did you get for Christmas?',),
      1, None)),
    (cola, 'dev', 'CoLA/dev.tsv', 1043, {0: 322, 1: 721},
     (('The sailors rode the breeze clear of the rocks.',),
      1, None),
     (('John talked to Bill about himself.',),
      1, None)),
    (cola, 'test', 'CoLA/test.tsv', 1063, None,
     (('Bill whistled past the house.',),
      None, '0'),
     (('A picture of himself frightened John.',),
      None, '1062')),
    (sst2, 'train', 'SST-2/train.tsv', 67349, {0: 29780, 1: 37569},
     (('hide new secretions from the parental units ',),
      0, None),
     ((('this new jangle of noise , mayhem and stupidity must be a serious contender for the'
        ' title . '),),
      0, None)),
    (sst2, 'dev', 'SST-2/dev.tsv', 872, {0: 428, 1: 444},
     (("it 's a charming and often affecting journey . ",),
      1, None),
     ((("looking aristocratic , luminous yet careworn in jane hamilton 's exemplary costumes ,"
        " rampling gives a performance that could not be improved upon . ' "),),
      1, None)),
    (sst2, 'test', 'SST-2/test.tsv', 1821, None,
     (('uneasy mishmash of styles and genres .',),
      None, '0'),
     ((('dazzling and sugar-sweet , a blast of shallow magnificence that only sex , scandal ,'
        ' and a chorus line of dangerous damsels can deliver .'),),
      None, '1820')),
    (mrpc, 'train', 'MRPC/train.tsv', 3668, {0: 1194, 1: 2474},
     ((('Amrozi accused his brother , whom he called " the witness " , of deliberately'
        ' distorting his evidence .'),
       ('Referring to him as only " the witness " , Amrozi accused his brother of deliberately'
        ' distorting his evidence .')),
      1, None),
     ((('The 30-year bond US30YT = RR rose 22 / 32 for a yield of 4.31 percent , versus 4.35'
        " percent at Wednesday 's close ."),
       ('The 30-year bond US30YT = RR grew 1-3 / 32 for a yield of 4.30 percent , down from 4.35'
        ' percent late Wednesday .')),
      0, None)),
    (mrpc, 'dev', 'MRPC/dev.tsv', 408, {0: 129, 1: 279},
     ((("He said the foodservice pie business doesn 't fit the company 's long-term growth"
        ' strategy .'),
       '" The foodservice pie business does not fit our long-term growth strategy .'),
      1, None),
     ((("Ex-KGB agent Putin added that the Beatles were considered ' propaganda of an alien"
        " ideology ' ."),
       'In Soviet times the Beatles \' music " was considered propaganda of an alien ideology .'),
      1, None)),
    (mrpc, 'test', 'MRPC/test.tsv', 1725, None,
     ((("PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief financial"
        ' officer , will report directly to Mr So .'),
       ('Current Chief Operating Officer Mike Butcher and Group Chief Financial Officer Alex'
        ' Arena will report to So .')),
      None, '0'),
     ((('Sobig.F spreads when unsuspecting computer users open file attachments in emails that'
        ' contain such familiar headings as " Thank You ! , " " Re : Details " or " Re : That'
        ' Movie . "'),
       ('The virus spreads when unsuspecting computer users open file attachments in emails that'
        ' contain familiar headings like " Thank You ! " and " Re : Details " .')),
      None, '1724')),
    (stsb, 'train', 'STS-B/train.tsv', 5749, None,
     (('A plane is taking off.',
       'An air plane is taking off.'),
      5.0, None),
     (('Putin spokesman: Doping charges appear unfounded',
       'The Latest on Severe Weather: 1 Dead in Texas After Tornado'),
      0.0, None)),
    (stsb, 'dev', 'STS-B/dev.tsv', 1500, None,
     (('A man with a hard hat is dancing.',
       'A man wearing a hard hat is dancing.'),
      5.0, None),
     (('New video shows US police officers beating mentally-ill man',
       'New York police officer critically wounded in hatchet attack'),
      0.0, None)),
    (stsb, 'test', 'STS-B/test.tsv', 1379, None,
     (('A girl is styling her hair.',
       'A girl is brushing her hair.'),
      None, '0'),
     (('South Korea declares end to MERS outbreak',
       'North Korea Delegation Meets With South Korean Officials'),
      None, '1378')),
    (qnli, 'dev', 'QNLI/dev.tsv', 5463, {0: 2702, 1: 2761},
     (('What came into force after the new constitution was herald?',
       'As of that day, the new constitution heralding the Second Republic came into force.'),
      0, None),
     (('Who discovered this and where did they come from?',
       ('The development of this fertile soil allowed agriculture and silviculture in the'
        ' previously hostile environment; meaning that large portions of the Amazon rainforest'
        ' are probably the result of centuries of human management, rather than naturally'
        ' occurring as has previously been supposed.')),
      1, None)),
    (qnli, 'test', 'QNLI/test.tsv', 5463, None,
     (('What organization is devoted to Jihad against Israel?',
       ('For some decades prior to the First Palestine Intifada in 1987, the Muslim Brotherhood'
        ' in Palestine took a "quiescent" stance towards Israel, focusing on preaching,'
        ' education and social services, and benefiting from Israel\'s "indulgence" to build up'
        ' a network of mosques and charitable organizations.')),
      None, '0'),
     (('Who fought in the great Northern war?',
       ('In 1709–13, a plague epidemic that followed the Great Northern War (1700–21, Sweden v.'
        ' Russia and allies) killed about 100,000 in Sweden, and 300,000 in Prussia.')),
      None, '5462')),
    (rte, 'train', 'RTE/train.tsv', 2490, {0: 1249, 1: 1241},
     (('No Weapons of Mass Destruction Found in Iraq Yet.',
       'Weapons of Mass Destruction Found in Iraq.'),
      1, None),
     ((('Turkey is unlikely to become involved in, or allow U.S. forces to use Turkish territory'
        ' in a Middle East war that does not threaten her territory directly.'),
       'U.S. to use Turkish military bases.'),
      1, None)),
    (rte, 'dev', 'RTE/dev.tsv', 277, {0: 146, 1: 131},
     ((('Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age'
        ' 44, according to the Christopher Reeve Foundation.'),
       'Christopher Reeve had an accident.'),
      1, None),
     ((('Danny Kennedy, Greenpeace campaigns director, said: "The burden of proof in the Scott'
        ' Parkin expulsion case lies morally with the Commonwealth, to prove that he is a'
        ' danger. When the Government brought in anti-terror legislation, they promised the'
        ' public that these laws would only be used to confront a real and present risk of a'
        ' terrorist attack, not a sweep-all approach against citizens. Peace is not terrorism.'
        ' Peace is not a threat to national security. No democratic government should expel a'
        ' foreign citizen because [it] opposes his political opinions."'),
       'Greenpeace director said that peace is terrorism.'),
      1, None)),
    (rte, 'test', 'RTE/test.tsv', 3000, None,
     ((("Mangla was summoned after Madhumita's sister Nidhi Shukla, who was the first witness in"
        ' the case.'),
       'Shukla is related to Mangla.'),
      None, '0'),
     ((('A Helios airliner (Boeing 737, flight HCY 522) with 115 passengers and 6 crew onboard'
        ' has crashed into a mountain at 09:04 UTC (12:04 p.m. EEST) near Grammatiko, 40'
        " kilometres (25 miles) north of Athens, while approaching the capital's airport. All on"
        ' board perished. The plane was travelling from Larnaca, in the southeast of Cyprus'
        ' (Greek:Kypros) and scheduled to arrive in Prague after a stop in Athens. In-flight'
        ' events Immediately after take-off, the pilots reported a problem with the air'
        ' conditioning system of the aircraft and requested to stay at a low altitude. A few'
        ' minutes later, the pilots alerted the station that the problem had been fixed and'
        ' requested permission to ascend. This information however has been denied by the'
        ' Director of Helios Airways. As the plane approached Athens, all communication abruptly'
        ' ceased, and the plane never issued a mayday distress signal. Two Greek F-16 military'
        ' aircraft were assigned to observe the plane. The pilots of the F-16s noted that one'
        ' airliner pilot appeared to be unconscious and the other was not in the cockpit.'),
       '26 people died in an airplane crash.'),
      None, '2999')),
    (wnli, 'train', 'WNLI/train.tsv', 635, {0: 323, 1: 312},
     (('I stuck a pin through a carrot. When I pulled the pin out, it had a hole.',
       'The carrot had a hole.'),
      1, None),
     ((('Although they ran at about the same speed, Sue beat Sally because she had such a bad'
        ' start.'),
       'Sally had such a bad start.'),
      1, None)),
    (wnli, 'dev', 'WNLI/dev.tsv', 71, {0: 40, 1: 31},
     (('The drain is clogged with hair. It has to be cleaned.',
       'The hair has to be cleaned.'),
      0, None),
     ((('George got free tickets to the play, but he gave them to Eric, because he was not'
        ' particularly eager to see it.'),
       'Eric was not particularly eager to see it.'),
      0, None)),
    (wnli, 'test', 'WNLI/test.tsv', 146, None,
     ((('Maude and Dora had seen the trains rushing across the prairie, with long, rolling puffs'
        ' of black smoke streaming back from the engine. Their roars and their wild, clear'
        ' whistles could be heard from far away. Horses ran away when they came in sight.'),
       'Horses ran away when Maude and Dora came in sight.'),
      None, '0'),
     ((('Edward dropped adhesive tape onto his window sill, and when he pulled the tape off,'
        ' some of the glue was stuck on it.'),
       'Some of the glue was stuck on the window sill.'),
      None, '145')),
    (mnli, 'diagnostic', 'diagnostic/diagnostic.tsv', 1104, None,
     (('The cat sat on the mat.',
       'The cat did not sit on the mat.'),
      None, '0'),
     (("The new general artificial intelligence I'm developing should come with an off switch.",
       'A general artificial intelligence should always come with an off switch.'),
      None, '1103')),
]


@pytest.mark.parametrize('load, split, file, rows, counts, first, last', GLUE_FILES,
                         ids=[f'{row[2]}' for row in GLUE_FILES])
def test_real_glue_file(load, split, file, rows, counts, first, last):
    data = load(os.path.join(tasks_dir('glue', file), 'glue'), [split])[split]
    assert [len(field) for field in data.fields] == [rows] * len(data.fields)
    assert len(data.labels if data.labels is not None else data.index) == rows
    if counts is not None:
        assert Counter(data.labels) == counts
    assert (example(data, 0), example(data, -1)) == (first, last)


def test_real_stsb_scores_are_floats_in_range():
    scores = stsb(os.path.join(tasks_dir('glue', 'STS-B', 'dev.tsv'), 'glue'), ['dev'])['dev'].labels
    assert all(isinstance(s, float) and 0 <= s <= 5 for s in scores)
    assert scores[1] == 4.75


def test_real_glue_default_splits_and_task_folder_itself():
    glue = os.path.join(tasks_dir('glue', 'CoLA'), 'glue')
    assert list(cola(glue)) == ['train', 'dev', 'test']
    from_task_folder = cola(os.path.join(glue, 'CoLA'), ['dev'])['dev']
    assert from_task_folder == cola(glue, ['dev'])['dev']
    glue = os.path.join(tasks_dir('glue', 'diagnostic'), 'glue')
    diagnostic = mnli(os.path.join(glue, 'diagnostic'), 'diagnostic')['diagnostic']
    assert len(diagnostic.index) == 1104


RACE_REAL = [
    # split, questions (high, middle), first (middle/<first file>), last (high/<last file>):
    # article's start, end and length, question, options, label
    ('dev', 4887, {'high': 3451, 'middle': 1436},
     ('Many Chinese people like American country music( )', '7. But his music and words will '
      'live on.', 916, 'John Denver is a great  _  singer.',
      ('English', 'Japanese', 'American', 'Chinese'), 2, 'middle'),
     ('Students in American schools learn from an early a', 'o present to the audience," '
      'LeBeau said.', 2186, 'Which could be the best title for this passage?',
      ('Necessity of Speaking English in Public Meetings',
       'Toastmasters, an international organization', 'Tips for Public Speaking',
       'Charles LeBeau, a public speaking professor and consultant'), 2, 'high')),
    ('test', 4934, {'high': 3498, 'middle': 1436},
     ("Take a class at Dulangkou School, and you'll see l", ' study leader. They are really '
      'helpful."', 1472, 'A discipline leader is supposed to  _  .',
      ('take care of the whole group', 'make sure that everybody finishes homework',
       'make sure that nobody chats in class',
       'collect all the homework and hand it in to teachers'), 2, 'middle'),
     ('British MPs   have voted in favour of the creation', ' be passed down through the '
      'generations.', 1821, 'Prime Minister David Cameron   _   the creation of such babies.',
      ('is in favour of', 'throws doubt on', 'objects to', 'is indifferent to'), 0, 'high')),
]


def race_example(split, i):
    article, question, *options = (field[i] for field in split.fields)
    return (article[:50], article[-40:], len(article), question, tuple(options),
            split.labels[i], split.group[i])


@pytest.mark.parametrize('split, rows, groups, first, last', RACE_REAL,
                         ids=[row[0] for row in RACE_REAL])
def test_real_race(split, rows, groups, first, last):
    data = race(tasks_dir('RACE', split), [split])[split]
    assert [len(field) for field in data.fields] == [rows] * 6
    assert data.index is None and Counter(data.group) == groups
    # middle first, then high
    assert data.group == ['middle'] * groups['middle'] + ['high'] * groups['high']
    assert (race_example(data, 0), race_example(data, -1)) == (first, last)


def test_real_snli_partial_skips_and_reports_pairs_without_gold_label(capsys):
    folder = os.path.join(tasks_dir('snli_1.0_PARTIAL'), 'snli_1.0_PARTIAL')
    data = snli(folder, ['dev', 'test'])
    assert "snli_1.0_dev.jsonl: skipped 16 pairs whose gold_label is '-'" in \
        capsys.readouterr().out
    dev, test = data['dev'], data['test']
    assert (len(dev.fields[0]), len(test.fields[0])) == (1289 - 16, 10)
    assert Counter(dev.labels) == {0: 433, 1: 421, 2: 419}
    assert (dev.index, test.index) == (None, None)
    assert example(dev, 0) == (('Two women are embracing while holding to go packages.',
                                'The sisters are hugging goodbye while holding to go packages '
                                'after just eating lunch.'), 1, None)
    assert example(dev, -1) == (('A girl wearing a maroon shirt leaps into the air while in the '
                                 'woods.', 'A girl leaps up to pick a fruit from a tree in the '
                                 'woods.'), 1, None)
    assert example(test, 0) == (('This church choir sings to the masses as they sing joyous '
                                 'songs from the book at a church.',
                                 'The church has cracks in the ceiling.'), 1, None)
    assert example(test, -1) == (('A statue at a museum that no seems to be looking at.',
                                  'The statue is offensive and people are mad that it is on '
                                  'display.'), 1, None)


# Small files in each official format, for the tasks whose real files are not here and for
# the quirks, so that a fresh clone tests them too.

def write(path, text, bom=False):
    """text written as UTF-8 bytes, exactly: no newline is added."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write((b'\xef\xbb\xbf' if bom else b'') + text.encode('utf-8'))
    return str(path)


def tsv(*rows, end='\n'):
    return '\n'.join('\t'.join(row) for row in rows) + end


MNLI_TEXT = ['index', 'promptID', 'pairID', 'genre', 'sentence1_binary_parse',
             'sentence2_binary_parse', 'sentence1_parse', 'sentence2_parse', 'sentence1',
             'sentence2']


def mnli_row(i, genre, labels=()):
    return [str(i), f'{i}0', f'{i}0n', genre, '( ( A ) b )', '( B )', '(ROOT (S (NP A) b))',
            '(ROOT (NP B))', f'Premise {i} "quoted', f'Hypothesis {i}.', *labels]


@pytest.fixture
def glue_dir(tmp_path):
    """A GLUE folder with MNLI, the diagnostic set, QQP and QNLI's train in their formats."""
    write(tmp_path / 'MNLI' / 'train.tsv', tsv(
        MNLI_TEXT + ['label1', 'gold_label'],
        mnli_row(0, 'government', ['neutral', 'neutral']),
        mnli_row(1, 'telephone', ['entailment', 'contradiction'])))
    dev_header = MNLI_TEXT + [f'label{i}' for i in range(1, 6)] + ['gold_label']
    for split, genre in (('matched', 'fiction'), ('mismatched', 'letters')):
        write(tmp_path / 'MNLI' / f'dev_{split}.tsv', tsv(
            dev_header, mnli_row(5, genre, ['neutral'] * 4 + ['entailment', 'neutral']),
            mnli_row(6, genre, ['contradiction'] * 5 + ['contradiction'])))
        write(tmp_path / 'MNLI' / f'test_{split}.tsv', tsv(MNLI_TEXT, mnli_row(9, genre)))
    write(tmp_path / 'diagnostic' / 'diagnostic.tsv',
          tsv(['index', 'sentence1', 'sentence2'], ['0', 'The cat sat.', 'It did not.'],
              end=''))
    qqp_header = ['id', 'qid1', 'qid2', 'question1', 'question2', 'is_duplicate']
    write(tmp_path / 'QQP' / 'train.tsv', tsv(
        qqp_header, ['133273', '213221', '213222', 'How is "math?', 'Which level?', '0'],
        ['402555', '536040', '536041', 'How do I?', 'What is the way I?', '1']))
    write(tmp_path / 'QQP' / 'dev.tsv', tsv(qqp_header, ['201359', '303345', '303346',
                                                         'Why are?', 'Why is?', '1']))
    write(tmp_path / 'QQP' / 'test.tsv', tsv(['id', 'question1', 'question2'],
                                             ['0', 'Is this?', 'Is that?']))
    write(tmp_path / 'QNLI' / 'train.tsv', tsv(
        ['index', 'question', 'sentence', 'label'],
        ['0', 'When did it start?', '"It began in 1900, he said.', 'entailment'],
        ['1', 'Who?', 'Nobody knows.', 'not_entailment']))
    return tmp_path


def test_mnli_finds_columns_by_name_in_each_official_layout(glue_dir):
    data = mnli(glue_dir)
    assert list(data) == ['train', 'dev_matched', 'dev_mismatched', 'test_matched',
                          'test_mismatched', 'diagnostic']
    assert data['train'] == Split((['Premise 0 "quoted', 'Premise 1 "quoted'],
                                   ['Hypothesis 0.', 'Hypothesis 1.']), [1, 2], None)
    assert data['dev_mismatched'] == Split((['Premise 5 "quoted', 'Premise 6 "quoted'],
                                            ['Hypothesis 5.', 'Hypothesis 6.']), [1, 2], None)
    assert data['test_matched'] == Split((['Premise 9 "quoted'], ['Hypothesis 9.']), None,
                                         ['9'])
    assert data['diagnostic'] == Split((['The cat sat.'], ['It did not.']), None, ['0'])


def test_mnli_from_its_own_folder_finds_the_diagnostic_set_beside_it(glue_dir):
    data = mnli(glue_dir / 'MNLI', ['dev_matched', 'diagnostic'])
    assert data['diagnostic'].index == ['0']
    assert data['dev_matched'].labels == [1, 2]


def test_qqp_and_qnli_train(glue_dir):
    data = qqp(glue_dir)
    assert data['train'] == Split((['How is "math?', 'How do I?'],
                                   ['Which level?', 'What is the way I?']), [0, 1], None)
    assert data['dev'].labels == [1]
    assert data['test'] == Split((['Is this?'], ['Is that?']), None, ['0'])
    assert qnli(glue_dir, ['train'])['train'] == Split(
        (['When did it start?', 'Who?'], ['"It began in 1900, he said.', 'Nobody knows.']),
        [0, 1], None)


def test_glue_quirks_in_small_files(tmp_path):
    """CoLA's header-less labelled files without a final newline, MRPC's byte-order mark,
    STS-B's score in its last column, unbalanced quotes kept as they are."""
    write(tmp_path / 'CoLA' / 'dev.tsv', tsv(['gj04', '1', '', 'A "b.'],
                                             ['w_80', '0', '*', 'C d.'], end=''))
    write(tmp_path / 'CoLA' / 'test.tsv', tsv(['index', 'sentence'], ['0', 'E f.']))
    assert cola(tmp_path, ['dev', 'test']) == {
        'dev': Split((['A "b.', 'C d.'],), [1, 0], None),
        'test': Split((['E f.'],), None, ['0'])}
    write(tmp_path / 'MRPC' / 'train.tsv', tsv(
        ['Quality', '#1 ID', '#2 ID', '#1 String', '#2 String'],
        ['1', '702876', '702977', 'He said " the .', '" The .']), bom=True)
    assert mrpc(tmp_path, ['train'])['train'] == Split((['He said " the .'], ['" The .']), [1],
                                                       None)
    header = ['index', 'genre', 'filename', 'year', 'old_index', 'source1', 'source2',
              'sentence1', 'sentence2']
    write(tmp_path / 'STS-B' / 'dev.tsv', tsv(
        header + ['score'],
        ['0', 'main-captions', 'MSRvid', '2012test', '0000', 'none', 'none', 'A.', 'B.', '5.000'],
        ['1', 'main-news', 'headlines', '2016', '1477', 'E', 'E', 'C.', 'D.', '0']))
    write(tmp_path / 'STS-B' / 'test.tsv', tsv(
        header, ['0', 'main-captions', 'MSRvid', '2012test', '0024', 'none', 'none', 'E.', 'F.']))
    assert stsb(tmp_path, ['dev', 'test']) == {
        'dev': Split((['A.', 'C.'], ['B.', 'D.']), [5.0, 0.0], None),
        'test': Split((['E.'], ['F.']), None, ['0'])}


def test_rte_wnli_sst2_labels(tmp_path):
    header = ['index', 'sentence1', 'sentence2', 'label']
    for folder, labels in (('RTE', ['entailment', 'not_entailment']), ('WNLI', ['0', '1'])):
        write(tmp_path / folder / 'dev.tsv', tsv(header, ['0', 'A.', 'B.', labels[1]],
                                                 ['1', 'C.', 'D.', labels[0]]))
    assert rte(tmp_path, 'dev')['dev'].labels == wnli(tmp_path, 'dev')['dev'].labels == [1, 0]
    write(tmp_path / 'SST-2' / 'dev.tsv', tsv(['sentence', 'label'], ['fine . ', '1']))
    assert sst2(tmp_path, 'dev')['dev'] == Split((['fine . '],), [1], None)


def snli_line(i, gold):
    return json.dumps({'annotator_labels': [gold], 'captionID': f'{i}.jpg#0', 'gold_label': gold,
                       'pairID': f'{i}.jpg#0r1n', 'sentence1': f'Premise {i}.',
                       'sentence1_binary_parse': '( a )', 'sentence1_parse': '(ROOT a)',
                       'sentence2': f'Hypothesis {i}.', 'sentence2_binary_parse': '( b )',
                       'sentence2_parse': '(ROOT b)'})


def test_snli_official_folder(tmp_path, capsys):
    folder = tmp_path / 'snli_1.0'
    write(folder / 'snli_1.0_train.jsonl',
          '\n'.join(snli_line(i, gold) for i, gold in
                    enumerate(['neutral', '-', 'contradiction', '-', 'entailment'])) + '\n')
    write(folder / 'snli_1.0_dev.jsonl', snli_line(7, 'entailment') + '\n')
    write(folder / 'snli_1.0_test.jsonl', snli_line(8, 'contradiction'))
    data = snli(tmp_path)
    assert list(data) == ['train', 'dev', 'test']
    assert data['train'] == Split((['Premise 0.', 'Premise 2.', 'Premise 4.'],
                                   ['Hypothesis 0.', 'Hypothesis 2.', 'Hypothesis 4.']),
                                  [1, 2, 0], None)
    assert (data['dev'].labels, data['test'].labels) == ([0], [2])
    out = capsys.readouterr().out
    assert f"{folder / 'snli_1.0_train.jsonl'}: skipped 2 pairs" in out
    assert out.count('skipped') == 1  # nothing to report for dev and test


def test_scitail_official_folder(tmp_path):
    folder = tmp_path / 'SciTailV1.1' / 'tsv_format'
    for split in ('train', 'dev', 'test'):
        write(folder / f'scitail_1.0_{split}.tsv', tsv(
            ['Pluto rotates once on its axis every 6.39 Earth days.',
             'Earth rotates on its axis once times in one day.', 'neutral'],
            [f'A "{split}" premise.', 'A hypothesis.', 'entails']))
    data = scitail(tmp_path)
    assert list(data) == ['train', 'dev', 'test']
    assert data['test'] == Split((['Pluto rotates once on its axis every 6.39 Earth days.',
                                   'A "test" premise.'],
                                  ['Earth rotates on its axis once times in one day.',
                                   'A hypothesis.']), [1, 0], None)
    assert scitail(folder, 'dev')['dev'].labels == [1, 0]


def race_file(answers, article='An article.', questions=None, options=None):
    questions = questions or [f'Question {i}?' for i in range(len(answers))]
    options = options or [[f'{a}{i}' for a in 'ABCD'] for i in range(len(answers))]
    return json.dumps({'answers': answers, 'options': options, 'questions': questions,
                       'article': article, 'id': 'x.txt'})


def test_race_one_example_per_question_middle_then_high_by_file_name(tmp_path):
    for level, name, answers in (('high', '2.txt', ['D']), ('high', '10.txt', ['A', 'B']),
                                 ('middle', '5.txt', ['C'])):
        write(tmp_path / 'RACE' / 'train' / level / name,
              race_file(answers, article=f'{level} {name}'))
    write(tmp_path / 'RACE' / 'train' / 'high' / '.DS_Store', 'not RACE')
    data = race(tmp_path, ['train'])['train']
    assert data.fields == (['middle 5.txt', 'high 10.txt', 'high 10.txt', 'high 2.txt'],
                           ['Question 0?', 'Question 0?', 'Question 1?', 'Question 0?'],
                           ['A0', 'A0', 'A1', 'A0'], ['B0', 'B0', 'B1', 'B0'],
                           ['C0', 'C0', 'C1', 'C0'], ['D0', 'D0', 'D1', 'D0'])
    assert data.labels == [2, 0, 1, 3]
    assert data.group == ['middle', 'high', 'high', 'high']
    assert race(tmp_path / 'RACE', 'train')['train'] == data


def test_user_csv_and_tsv(tmp_path):
    path = write(tmp_path / 'mine.csv',
                 'id,text,other,label\n'
                 '1,"Hello, world",x,pos\n'
                 '\n'
                 '2,"Two\nlines with ""quotes""",y,neg\n')
    assert user_csv(path, ['text', 'other'], 'label') == Split(
        (['Hello, world', 'Two\nlines with "quotes"'], ['x', 'y']), ['pos', 'neg'], None)
    assert user_csv(path, 'text') == Split((['Hello, world', 'Two\nlines with "quotes"'],),
                                           None, None)
    path = write(tmp_path / 'mine.TSV', 'text\tlabel\n"a\tb"\t1\nc, d\t0\n')
    assert user_csv(path, ['text'], 'label') == Split((['a\tb', 'c, d'],), ['1', '0'], None)


def test_user_csv_missing_column_names_file_and_header(tmp_path):
    path = write(tmp_path / 'mine.csv', 'id,text\n1,a\n')
    with pytest.raises(ValueError) as err:
        user_csv(path, ['text'], 'label')
    assert str(err.value) == (f"{path}, line 1: expected a header naming text, label, "
                              "found ['id', 'text']")


def test_user_csv_empty_label_is_refused_not_made_a_class(tmp_path):
    path = write(tmp_path / 'mine.csv', 'text,label\na,pos\nb,\nc,neg\n')
    with pytest.raises(ValueError) as err:
        user_csv(path, ['text'], 'label')
    assert str(err.value) == f"{path}, line 3: expected a label in 'label', found ''"
    path = write(tmp_path / 'mine.tsv', 'text\tlabel\na\t \n')
    with pytest.raises(ValueError, match=r"line 2: expected a label in 'label', found ' '$"):
        user_csv(path, ['text'], 'label')


def test_a_header_naming_a_read_column_twice_is_refused(tmp_path):
    path = write(tmp_path / 'mine.csv', 'text,label,text\na,pos,b\n')
    with pytest.raises(ValueError) as err:
        user_csv(path, ['text'], 'label')
    assert str(err.value) == (f"{path}, line 1: the header names 'text' 2 times (columns 1, "
                              "3); rename all but one")
    assert user_csv(path, ['label']).fields == (['pos'],)  # a column not read is no matter
    path = write(tmp_path / 'RTE' / 'dev.tsv', tsv(['index', 'sentence1', 'label', 'sentence2',
                                                    'label'], ['0', 'A.', '1', 'B.', '1']))
    with pytest.raises(ValueError, match=rf"^{path}, line 1: the header names 'label' 2 times "
                                         r'\(columns 3, 5\)'):
        rte(tmp_path, ['dev'])


def test_a_header_without_rows_is_refused(tmp_path):
    path = write(tmp_path / 'mine.csv', 'text,label\n\n')
    with pytest.raises(ValueError, match=rf'^{path} holds a header but no rows$'):
        user_csv(path, ['text'], 'label')
    path = write(tmp_path / 'SST-2' / 'dev.tsv', tsv(['sentence', 'label']))
    with pytest.raises(ValueError, match=rf'^{path} holds a header but no rows$'):
        sst2(tmp_path, ['dev'])
    path = write(tmp_path / 'CoLA' / 'dev.tsv', '')
    with pytest.raises(ValueError, match=rf'^{path} holds no rows$'):
        cola(tmp_path, ['dev'])


# Control characters (datasets.CONTROL): a NUL is an error in every file; the others that
# ftfy deletes are an error in a user's file and a warning in an official one; tab, line
# breaks, form feed and C1 controls pass.

@pytest.mark.parametrize('text', ['tab\there', 'two\nlines', 'carriage\rreturn',
                                  'form\x0cfeed', 'C1 \x85 ellipsis', 'plain'])
def test_user_csv_keeps_the_whitespace_its_format_allows(tmp_path, text):
    path = tmp_path / 'mine.csv'
    with open(path, 'w', encoding='utf-8', newline='') as f:  # no newline translation
        f.write(f'text,label\r\n"{text}",x\r\n')
    assert user_csv(path, ['text'], 'label').fields == ([text],)


@pytest.mark.parametrize('char', ['\x01', '\x08', '\x0b', '\x1b', '\x1f', '\x7f'])
def test_user_file_control_character_names_line_column_and_character(tmp_path, char):
    path = write(tmp_path / 'mine.tsv', f'id\ttext\tlabel\n1\tfine\tx\n2\tbad{char}one\ty\n')
    with pytest.raises(ValueError) as err:
        user_csv(path, ['text'], 'label')
    assert str(err.value) == (f"{path}, line 3: 'text' holds the control character "
                              f"U+{ord(char):04X} at character 4, which the text pipeline "
                              "(ftfy) deletes, joining what is on either side: remove it, or "
                              "put a space in its place")


def test_nul_is_refused_in_every_file_with_its_line(tmp_path):
    nul = 'expected text \\(a binary file, or text saved as UTF-16\\? save it as UTF-8\\)$'
    path = write(tmp_path / 'mine.csv', 'text,label\na,x\nb\x00c,y\n')
    with pytest.raises(ValueError, match=rf'^{path}, line 3: the line holds a NUL character '
                                         rf'\(U\+0000\) at character 2: {nul}'):
        user_csv(path, ['text'], 'label')
    path = tmp_path / 'utf16.csv'
    path.write_bytes('text,label\na,x\n'.encode('utf-16-le'))
    with pytest.raises(ValueError, match=rf'^{path}, line 1: the line holds a NUL character '
                                         r'\(U\+0000\) at character 2'):
        user_csv(path, ['text'], 'label')
    # in an official file too, in a column that is not read
    path = write(tmp_path / 'RTE' / 'dev.tsv', tsv(['index', 'sentence1', 'sentence2', 'label'],
                                                   ['0', 'A.', 'B.', 'entailment'],
                                                   ['1\x00', 'A.', 'B.', 'entailment']))
    with pytest.raises(ValueError, match=rf'^{path}, line 3: the line holds a NUL'):
        rte(tmp_path, ['dev'])
    # JSON may spell it as an escape
    path = write(tmp_path / 'snli_1.0' / 'snli_1.0_dev.jsonl',
                 snli_line(1, 'neutral').replace('Premise 1.', 'Pre\\u0000mise') + '\n')
    with pytest.raises(ValueError, match=rf"^{path}, line 1: 'sentence1' holds a NUL character "
                                         r'\(U\+0000\) at character 4'):
        snli(tmp_path, ['dev'])


def test_official_files_warn_once_of_control_characters_ftfy_deletes(tmp_path, capsys):
    """As CoLA's train.tsv ships three U+0008: read, as the paper's runs read it, with one
    warning per file naming the first."""
    path = write(tmp_path / 'CoLA' / 'train.tsv', tsv(['gj04', '1', '', 'Fine.'],
                                                      ['gj04', '1', '', 'put \x08a pin.'],
                                                      ['gj04', '0', '*', '\x08Bad.']))
    assert cola(tmp_path, ['train'])['train'].fields == (['Fine.', 'put \x08a pin.', '\x08Bad.'],)
    assert capsys.readouterr().err == (
        f"warning: {path}, line 2: 'sentence' holds the control character U+0008 at "
        "character 5, which ftfy deletes, as in the paper's runs (2 such text(s) in all)\n")
    write(tmp_path / 'RACE' / 'dev' / 'middle' / '1.txt',
          race_file(['A'], article='An \x0barticle.'))  # JSON writes it \\u000b
    os.makedirs(tmp_path / 'RACE' / 'dev' / 'high')
    race(tmp_path, ['dev'])
    assert "1.txt, question 1: 'article' holds the control character U+000B at character 4" \
        in capsys.readouterr().err


def test_test_files_are_optional_where_asked(tmp_path):
    """A test split whose files are missing is left out where it is optional, and is an
    error naming them where it is not."""
    header = ['sentence', 'label']
    for split in ('train', 'dev'):
        write(tmp_path / 'SST-2' / f'{split}.tsv', tsv(header, ['fine .', '1']))
    assert list(sst2(tmp_path, optional=('test',))) == ['train', 'dev']
    with pytest.raises(FileNotFoundError, match='SST-2/test.tsv not found'):
        sst2(tmp_path)
    write(tmp_path / 'SST-2' / 'test.tsv', tsv(['index', 'sentence'], ['0', 'good .']))
    assert list(sst2(tmp_path, optional=('test',))) == ['train', 'dev', 'test']
    with pytest.raises(FileNotFoundError, match='RACE/dev/middle not found'):
        race(tmp_path, ['dev'], optional=('test',))  # only the splits named


# Errors: each names the file and the 1-based line.

MALFORMED_GLUE = [
    # loader, file, content, line, what the message says
    (rte, 'RTE/train.tsv', tsv(['index', 'sentence1', 'sentence2', 'label'],
                               ['0', 'A.', 'B.', 'entailment'], ['1', 'A.', 'entailment']),
     3, 'expected 4 fields (index, sentence1, sentence2, label), found 3'),
    (rte, 'RTE/train.tsv', tsv(['index', 'sentence1', 'sentence2', 'label'],
                               ['0', 'A.', 'B.', 'entailed']),
     2, "expected a label in ['entailment', 'not_entailment'], found 'entailed'"),
    (cola, 'CoLA/train.tsv', tsv(['gj04', '1', '', 'A.'], ['gj04', '2', '', 'B.']),
     2, "expected a label in ['0', '1'], found '2'"),
    (stsb, 'STS-B/train.tsv',
     tsv(['index', 'sentence1', 'sentence2', 'score'], ['0', 'A.', 'B.', 'high']),
     2, "expected a similarity score from 0 to 5, found 'high'"),
    (stsb, 'STS-B/train.tsv',
     tsv(['index', 'sentence1', 'sentence2', 'score'], ['0', 'A.', 'B.', '1'],
         ['1', 'A.', 'B.', '5.2']),
     3, "expected a similarity score from 0 to 5, found '5.2'"),
    (stsb, 'STS-B/train.tsv',
     tsv(['index', 'sentence1', 'sentence2', 'score'], ['0', 'A.', 'B.', 'nan']),
     2, "expected a similarity score from 0 to 5, found 'nan'"),
    (mrpc, 'MRPC/train.tsv',
     tsv(['Quality', '#1 ID', '#2 ID', '#1 String', '#2 String'], ['1', '1', '2', 'A .', ' ']),
     2, "expected text in '#2 String', found ' '"),
    (qqp, 'QQP/train.tsv', tsv(['id', 'question1', 'question2'], ['0', 'A?', 'B?']),
     1, "expected a header naming question1, question2, is_duplicate, found "
        "['id', 'question1', 'question2']"),
    (sst2, 'SST-2/train.tsv', '', 1, "expected a header naming sentence, label, found []"),
]


@pytest.mark.parametrize('load, file, content, line, message', MALFORMED_GLUE,
                         ids=[f'{row[1]}-{i}' for i, row in enumerate(MALFORMED_GLUE)])
def test_malformed_row_names_file_and_line(tmp_path, load, file, content, line, message):
    path = write(tmp_path / file, content)
    with pytest.raises(ValueError) as err:
        load(tmp_path, ['train'])
    assert str(err.value) == f'{path}, line {line}: {message}'


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = tmp_path / 'WNLI' / 'dev.tsv'
    write(path, tsv(['index', 'sentence1', 'sentence2', 'label'], ['0', 'A.', 'B.', '1']))
    with open(path, 'ab') as f:
        f.write(b'1\tCaf\xe9.\tB.\t0\n')
    with pytest.raises(ValueError, match=rf'^{path}, line 3: expected UTF-8 text, found byte '
                                         r'0xe9 at byte 6 of the line$'):
        wnli(tmp_path, ['dev'])
    csv_path = tmp_path / 'mine.csv'
    with open(csv_path, 'wb') as f:
        f.write(b'text\n"multi\nline"\n\xff\n')
    with pytest.raises(ValueError, match=rf'^{csv_path}, line 4: expected UTF-8'):
        user_csv(csv_path, ['text'])


def test_malformed_snli_lines(tmp_path):
    folder = tmp_path / 'snli_1.0'
    bad_lines = [('{"gold_label": "neutral", "sentence1": "A."', 'expected a JSON object'),
                 ('["neutral"]', 'expected a JSON object with sentence1, sentence2 and '
                                 'gold_label'),
                 (snli_line(3, 'neutral').replace('Hypothesis 3.', ''),
                  "expected text in 'sentence2', found ''"),
                 (snli_line(3, 'entails'), "expected a label in ['entailment', 'neutral', "
                                           "'contradiction'], found 'entails'")]
    for bad, message in bad_lines:
        path = write(folder / 'snli_1.0_dev.jsonl',
                     snli_line(1, 'neutral') + '\n' + snli_line(2, '-') + '\n' + bad + '\n')
        with pytest.raises(ValueError) as err:
            snli(tmp_path, ['dev'])
        assert str(err.value).startswith(f'{path}, line 3: {message}')


def test_malformed_scitail_and_user_csv_rows(tmp_path):
    folder = tmp_path / 'SciTailV1.1' / 'tsv_format'
    path = write(folder / 'scitail_1.0_dev.tsv', tsv(['P.', 'H.', 'neutral'], ['P.', 'H.']))
    with pytest.raises(ValueError, match=rf'^{path}, line 2: expected 3 fields '
                                         r'\(premise, hypothesis, label\), found 2$'):
        scitail(tmp_path, ['dev'])
    path = write(tmp_path / 'mine.csv', 'text,label\n"a\nb",1\nc\n')
    with pytest.raises(ValueError, match=rf'^{path}, line 4: expected 2 fields '
                                         r'\(text, label\), found 1$'):
        user_csv(path, ['text'], 'label')


@pytest.mark.parametrize('content, message', [
    ('{"answers": ["A"], "options": [["a", "b", "c", "d"]],\n "questions": ["Q?"] "article"',
     ', line 2: expected one JSON object'),
    (race_file(['A', 'B'], questions=['Q?']),
     ': expected as many answers, options and questions, found 2, 2 and 1'),
    (race_file(['A'], options=[['a', 'b', 'c']]),
     ", question 1: expected a list of 4 options, found ['a', 'b', 'c']"),
    (race_file(['A', 'E']), ", question 2: expected a label in ['A', 'B', 'C', 'D'], found 'E'"),
    (race_file(['A', 1]), ", question 2: expected a label in ['A', 'B', 'C', 'D'], found 1"),
    (race_file(['A'], article=''), ", question 1: expected text in 'article', found ''"),
    ('[]', ': expected a JSON object with the lists answers, options and questions'),
])
def test_malformed_race_file_named(tmp_path, content, message):
    write(tmp_path / 'RACE' / 'dev' / 'middle' / '1.txt', race_file(['A']))
    os.makedirs(tmp_path / 'RACE' / 'dev' / 'high')
    path = write(tmp_path / 'RACE' / 'dev' / 'middle' / '2.txt', content)
    with pytest.raises(ValueError) as err:
        race(tmp_path, ['dev'])
    assert str(err.value).startswith(path + message)


def test_missing_file_names_the_paths_and_the_source(tmp_path):
    write(tmp_path / 'CoLA' / 'train.tsv', tsv(['gj04', '1', '', 'A.']))
    with pytest.raises(FileNotFoundError) as err:
        cola(tmp_path)
    message = str(err.value)
    assert os.path.join(str(tmp_path), 'CoLA', 'dev.tsv') in message
    assert 'https://gluebenchmark.com/tasks' in message
    with pytest.raises(FileNotFoundError, match='nlp.stanford.edu/projects/snli'):
        snli(tmp_path, ['dev'])
    with pytest.raises(FileNotFoundError, match=r'allenai\.org/data/scitail'):
        scitail(tmp_path, ['test'])
    with pytest.raises(FileNotFoundError, match=r'RACE/dev/middle not found.*glai1/data/race'):
        race(tmp_path, ['dev'])
    with pytest.raises(FileNotFoundError, match='diagnostic.tsv'):
        mnli(tmp_path, ['diagnostic'])
    with pytest.raises(FileNotFoundError, match='missing.csv'):
        user_csv(tmp_path / 'missing.csv', ['text'])


def test_unknown_split_lists_the_tasks_splits(tmp_path):
    with pytest.raises(ValueError, match="mnli has no split 'dev'; its splits are train, "
                                         "dev_matched, dev_mismatched, test_matched, "
                                         "test_mismatched, diagnostic"):
        mnli(tmp_path, ['dev'])


def test_labels_cover_every_classification_task():
    assert set(LABELS) == set(datasets.GLUE) - {'stsb'} | {'snli', 'scitail', 'race'}
