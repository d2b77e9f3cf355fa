#!/usr/bin/env python3
"""The seeds' folder copier (seed 002 section 10), the peer of mpcp in the
`copy` benchmark family.

As in the seed: one task per file through multiprocessing.Pool.apply_async,
each task copying its file in 1 KiB reads and putting the file's name on a
Manager().Queue(), and the parent reading the queue to print the progress
percentage. Changes from the seed, so that it can be measured: no random
sleep, the folders come from the command line instead of input(), and it
walks subfolders (creating them first) instead of copying one flat folder,
and --quiet drops the progress printing.

    seed_copier.py SRC DEST [--workers N] [--quiet]
"""
import os
import sys

# bench/python holds peers named after our families (queue.py, ...): keep
# them from shadowing the standard library's modules of the same names.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import multiprocessing  # noqa: E402


def copy_file(queue, file_name, source_folder_name, dest_folder_name):
    """copy a file to the destination folder"""
    f_read = open(source_folder_name + "/" + file_name, "rb")
    f_write = open(dest_folder_name + "/" + file_name, "wb")
    while True:
        content = f_read.read(1024)
        if content:
            f_write.write(content)
        else:
            break
    f_read.close()
    f_write.close()
    # send the name of the file that was copied
    queue.put(file_name)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    quiet = "--quiet" in sys.argv
    workers = 3  # the seed's Pool(3)
    if "--workers" in sys.argv:
        workers = int(sys.argv[sys.argv.index("--workers") + 1])
        args.remove(str(workers))
    source_folder_name, dest_folder_name = args[0], args[1]
    try:
        os.mkdir(dest_folder_name)
    except OSError:
        pass  # the folder may exist already
    # all regular files, relative to the source folder; folders made first
    file_names = []
    for root, dirs, files in os.walk(source_folder_name):
        rel = os.path.relpath(root, source_folder_name)
        for d in dirs:
            os.makedirs(os.path.join(dest_folder_name, rel, d), exist_ok=True)
        for f in files:
            file_names.append(os.path.normpath(os.path.join(rel, f)))
    queue = multiprocessing.Manager().Queue()
    pool = multiprocessing.Pool(workers)
    for file_name in file_names:
        pool.apply_async(copy_file, args=(queue, file_name, source_folder_name,
                                          dest_folder_name))
    pool.close()
    # the main process shows the progress, as the seed does
    all_file_num = len(file_names)
    while all_file_num:
        file_name = queue.get()
        if file_name in file_names:
            file_names.remove(file_name)
        copy_rate = (all_file_num - len(file_names)) * 100 / all_file_num
        if not quiet:
            print("\r%.2f...(%s)" % (copy_rate, file_name) + " " * 50, end="")
        if copy_rate >= 100:
            break
    pool.join()
    if not quiet:
        print()


if __name__ == "__main__":
    main()
