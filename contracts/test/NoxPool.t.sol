// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {NoxTest} from "./utils/NoxTest.sol";
import {NoxPool, NoxExecutor} from "../src/NoxPool.sol";
import {NoxTestToken} from "../src/NoxTestToken.sol";
import {PoseidonT3} from "../src/generated/PoseidonT3.sol";
import {PoseidonT4} from "../src/generated/PoseidonT4.sol";
import {SpendVerifier} from "../src/generated/SpendVerifier.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice The Foundry cheatcodes these tests need beyond NoxTest's.
interface PoolCheats {
    struct Gas {
        uint64 gasLimit;
        uint64 gasTotalUsed;
        uint64 gasMemoryUsed;
        int64 gasRefunded;
        uint64 gasRemaining;
    }

    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function fee(uint256 newBasefee) external;
    function store(address target, bytes32 slot, bytes32 value) external;
    function load(address target, bytes32 slot) external view returns (bytes32);
    function cool(address target) external;
    function lastCallGas() external view returns (Gas memory);
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
}

// ------------------------------------------------------------------- test contracts

/// @notice The contract relayed calls go to in these tests.
contract RelayTarget {
    address public lastCaller;
    uint256 public lastValue;
    uint256 public calls;

    function ping(uint256 x) external {
        lastCaller = msg.sender;
        lastValue = x;
        calls++;
    }
}

/// @notice A call that does nothing: relaying it shows the relay's own gas.
contract NoopTarget {
    function noop() external {}
}

/// @notice Put at the no-op target's address: its noop() tries to re-enter the pool
///         through every state-changing entry point and records whether the
///         reentrancy guard refused each one.
contract ReentrantNoop {
    uint256 public refused;

    function refusedByTheGuard(bytes memory reason) internal {
        // The selector is the first four bytes of the revert data.
        // forge-lint: disable-next-line(unsafe-typecast)
        if (bytes4(reason) == ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector) refused++;
    }

    function noop() external {
        NoxPool pool = NoxPool(NoxExecutor(msg.sender).pool());
        uint256[8] memory proof;
        NoxPool.SpendInputs memory inputs;
        try pool.deposit(1, 1) {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
        try pool.depositERC20(IERC20(address(this)), 1, 1) {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
        try pool.withdraw(proof, inputs) {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
        try pool.relay(proof, inputs, address(this), 0, 0, "") {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
        try pool.flush(new uint256[](0), new uint256[](0)) {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
    }
}

/// @notice Put at the no-op target's address: noop() fails.
contract FailingNoop {
    function noop() external pure {
        revert("the user's action failed");
    }
}

/// @notice A token that keeps 1 % of every transfer.
contract FeeToken {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        return _move(msg.sender, to, amount);
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        allowance[from][msg.sender] -= amount;
        return _move(from, to, amount);
    }

    function _move(address from, address to, uint256 amount) internal returns (bool) {
        balanceOf[from] -= amount;
        balanceOf[to] += amount - amount / 100;
        return true;
    }
}

/// @notice Refuses ETH: a withdrawal to it cannot be paid.
contract RefusesEth {
    receive() external payable {
        revert("no");
    }
}

/// @notice Exposes the batch insertion for the root comparison with Rust.
contract NoxPoolHarness is NoxPool {
    function insertBatch(uint256[] calldata leaves, uint256 start) external returns (uint256) {
        return _insertBatch(leaves, start);
    }
}

/// @notice Work that needs about 150k gas (measured by
///         `test_the_starvable_target_needs_less_than_its_call_gas`); with less it runs out of gas.
contract InnerWork {
    function work() external pure returns (bytes32 h) {
        assembly ("memory-safe") {
            for { let i := 0 } lt(i, 1250) { i := add(i, 1) } {
                mstore(0x00, h)
                mstore(0x20, i)
                h := keccak256(0x00, 0x40)
            }
        }
    }
}

/// @notice A relayed call that survives its inner call's out-of-gas cheaply: run() records
///         the gas it had at entry, calls InnerWork with all it has and, if the work
///         succeeded, records that too. Starved, it returns normally with the 1/64 the
///         inner call left it: what a relayer sending too little gas would exploit.
contract StarvableTarget {
    InnerWork internal immutable inner = new InnerWork();
    /// @dev gasleft() at run()'s entry shifted left by one; lowest bit: the work succeeded.
    ///      Never zero, so that run()'s first write costs the same every time.
    uint256 internal record = 1;

    function run() external {
        uint256 entry = gasleft();
        record = entry << 1;
        (bool ok,) = address(inner).call(abi.encodeCall(InnerWork.work, ()));
        if (ok) record = (entry << 1) | 1;
    }

    function entryGas() external view returns (uint256) {
        return record >> 1;
    }

    function workSucceeded() external view returns (bool) {
        return record & 1 == 1;
    }
}

/// @notice NoxExecutor as it was before v2, its gas check made after the call: kept to
///         show what that check let through.
contract AfterTheCallExecutor {
    function execute(address target, uint256 callGas, bytes calldata data) external returns (bool ok) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            calldatacopy(m, data.offset, data.length)
            ok := call(callGas, target, 0, m, data.length, 0, 0)
        }
        if (gasleft() < callGas / 63) revert NoxExecutor.InsufficientCallGas();
    }
}

// --------------------------------------------------------------------------- base

/// @notice What the pool tests share: the pool under test, the test's own record of
///         every leaf queued in it and of its bounty (by leaf index), deposits and
///         flushes that keep that record, and the root Rust computes for a list of leaves.
/// @dev Tests that set a base fee or measure gas run in one transaction (inline config
///      `default.isolate = false`): under --isolate, which --gas-report
///      turns on, every call from a test is a transaction of its own, where the base fee
///      is 0 and the last call's gas includes the intrinsic 21,000 and the calldata.
abstract contract NoxPoolTestBase is NoxTest {
    PoolCheats internal constant cheats = PoolCheats(address(vm));
    uint256 internal constant R = SpendVerifier.SCALAR_MODULUS;
    uint256 internal constant BATCH = 32;
    uint256 internal constant MAX_LEAVES = 2 ** 20;
    /// @dev `forge inspect NoxPool storage-layout`: `head` (the open segment's chain,
    ///      the next leaf's index in its low 32 bits) fills slot 0, the Queue struct
    ///      (nextIndex, openStart, openBlock: 32 bits each from the lowest) slot 1,
    ///      closedSegments is the mapping at slot 2. `_setQueue` checks the first two
    ///      against queueState(), `test_segments_report_*` the third.
    bytes32 internal constant HEAD_SLOT = bytes32(uint256(0));
    bytes32 internal constant QUEUE_SLOT = bytes32(uint256(1));
    uint256 internal constant CLOSED_SEGMENTS_SLOT = 2;
    /// @dev The chain of an empty segment, above `head`'s 32-bit leaf index.
    uint256 internal constant EMPTY_CHAIN = 1 << 32;
    address internal constant DEPOSITOR = address(0xD3);
    address internal constant FLUSHER = address(0xF1);

    NoxPool internal pool;
    uint256[] internal queued;
    /// @dev The bounty each queued leaf's transaction sent, as its Queued event names it.
    uint256[] internal bounties;

    /// @dev Records the leaf the pool queued next and the bounty it was queued with.
    function _record(uint256 leaf, uint256 bounty) internal {
        queued.push(leaf);
        bounties.push(bounty);
    }

    /// @dev `from` deposits `value` wei with `secret`, sending the current bounty.
    function _depositEth(address from, uint256 value, uint256 secret) internal returns (uint256 index) {
        uint256 bounty = pool.insertionBounty();
        vm.prank(from);
        index = pool.deposit{value: value + bounty}(value, secret);
        vm.assertEq(index, queued.length, "leaf index = leaves queued before");
        _record(PoseidonT4.hash(0, value, secret), bounty);
    }

    /// @dev The depositor queues `count` notes of 1 wei, secrets derived from `seed`.
    function _queueNotes(uint256 count, uint256 seed) internal {
        for (uint256 i; i < count; ++i) {
            _depositEth(DEPOSITOR, 1, uint256(keccak256(abi.encode(seed, queued.length))) % R);
        }
    }

    /// @dev Queued leaves `from` to `to - 1`.
    function _leaves(uint256 from, uint256 to) internal view returns (uint256[] memory l) {
        l = new uint256[](to - from);
        for (uint256 i; i < l.length; ++i) {
            l[i] = queued[from + i];
        }
    }

    /// @dev The bounties of queued leaves `from` to `to - 1`, as `flush` takes them.
    function _bounties(uint256 from, uint256 to) internal view returns (uint256[] memory b) {
        b = new uint256[](to - from);
        for (uint256 i; i < b.length; ++i) {
            b[i] = bounties[from + i];
        }
    }

    /// @dev The sum of the bounties of leaves `from` to `to - 1`.
    function _bountySum(uint256 from, uint256 to) internal view returns (uint256 sum) {
        for (uint256 i = from; i < to; ++i) {
            sum += bounties[i];
        }
    }

    /// @dev The bounties of the leaves queued and not yet inserted: what the pool holds
    ///      beyond its ETH notes.
    function _bountiesQueued() internal view returns (uint256) {
        return _bountySum(pool.nextIndex(), queued.length);
    }

    /// @dev Every leaf queued and not yet inserted.
    function _pending() internal view returns (uint256[] memory) {
        return _leaves(pool.nextIndex(), queued.length);
    }

    /// @dev The bounties of every leaf queued and not yet inserted.
    function _pendingBounties() internal view returns (uint256[] memory) {
        return _bounties(pool.nextIndex(), queued.length);
    }

    /// @dev `flusher` flushes every pending leaf; the root must be Rust's and the
    ///      flusher is paid exactly the sum of the inserted leaves' bounties.
    function _flushPending(address flusher) internal returns (uint256 root) {
        uint256 start = pool.nextIndex();
        uint256[] memory leaves = _pending();
        uint256[] memory b = _pendingBounties();
        uint256 balanceBefore = flusher.balance;
        vm.prank(flusher);
        root = pool.flush(leaves, b);
        vm.assertEq(root, pool.currentRoot(), "flush returns the new root");
        vm.assertEq(pool.nextIndex(), queued.length, "everything inserted");
        vm.assertEq(root, _rustRoot(_leaves(0, queued.length)), "root = Rust root");
        vm.assertEq(flusher.balance - balanceBefore, _bountySum(start, queued.length), "flusher paid the bounties");
    }

    function _rustRoot(uint256[] memory leaves) internal returns (uint256) {
        string[] memory cmd = new string[](leaves.length + 2);
        cmd[0] = "target/debug/nox-zk";
        cmd[1] = "tree-root";
        for (uint256 i; i < leaves.length; ++i) {
            cmd[i + 2] = vm.toString(bytes32(leaves[i]));
        }
        return uint256(bytes32(vm.ffi(cmd)));
    }

    function _assertQueue(uint256 inserted, uint256 queuedCount, uint256 openStart) internal view {
        (uint256 i, uint256 q, uint256 o,) = pool.queueState();
        vm.assertEq(i, inserted, "queueState: inserted");
        vm.assertEq(q, queuedCount, "queueState: queued");
        vm.assertEq(o, openStart, "queueState: open segment start");
    }

    /// @dev Writes the queue's words directly (for TreeFull), the open segment empty,
    ///      and checks that they landed in the fields queueState() reads.
    function _setQueue(uint256 inserted, uint256 queuedCount, uint256 openStart, uint256 openBlock) internal {
        cheats.store(address(pool), HEAD_SLOT, bytes32(EMPTY_CHAIN | queuedCount));
        cheats.store(address(pool), QUEUE_SLOT, bytes32(inserted | openStart << 32 | openBlock << 64));
        _assertQueue(inserted, queuedCount, openStart);
        (,,, uint256 b) = pool.queueState();
        vm.assertEq(b, openBlock, "queueState: open block");
    }

    function _closedSegmentWord(uint256 start) internal view returns (uint256) {
        return uint256(cheats.load(address(pool), keccak256(abi.encode(start, CLOSED_SEGMENTS_SLOT))));
    }

    /// @dev Execution gas of the last call, as forge's gas report counts it (no
    ///      intrinsic 21,000, no calldata, refunds not subtracted).
    function _lastCallGas() internal view returns (uint256) {
        return cheats.lastCallGas().gasTotalUsed;
    }

    /// @dev What a transaction pays for its calldata: 16 gas per non-zero byte, 4 per zero.
    function _calldataGas(bytes memory data) internal pure returns (uint256 g) {
        for (uint256 i; i < data.length; ++i) {
            g += data[i] == 0 ? 4 : 16;
        }
    }
}

// --------------------------------------------------------------- queue and tree

/// @notice The queue, the segments, flushes, the bounty and the tree's roots, on a pool
///         of 1-wei deposits (no proofs needed).
contract NoxPoolQueueTest is NoxPoolTestBase {
    address constant OWNER = address(0xA0);
    address constant OTHER = address(0xB0);

    function setUp() public {
        pool = new NoxPool();
        vm.deal(DEPOSITOR, 1_000 ether);
    }

    // ------------------------------------------------------------------- roots

    /// @notice Batches of any size, starting anywhere (aligned or not), give the root
    ///         Rust gives for the same leaves inserted one by one.
    /// forge-config: default.fuzz.runs = 96
    function testFuzz_batches_of_any_size_and_start_give_the_rust_root(uint256 seed, uint8 count, uint8 largest)
        public
    {
        NoxPoolHarness h = new NoxPoolHarness();
        uint256 total = bound(count, 1, 40);
        uint256 maxBatch = bound(largest, 1, total);
        uint256[] memory all = new uint256[](total);
        for (uint256 i; i < total; ++i) {
            all[i] = uint256(keccak256(abi.encode(seed, "leaf", i))) % R;
        }
        uint256 pos;
        for (uint256 k; pos < total; ++k) {
            uint256 size = 1 + uint256(keccak256(abi.encode(seed, "size", k))) % maxBatch;
            if (size > total - pos) size = total - pos;
            uint256[] memory batch = new uint256[](size);
            for (uint256 i; i < size; ++i) {
                batch[i] = all[pos + i];
            }
            uint256 root = h.insertBatch(batch, pos);
            pos += size;
            uint256[] memory sofar = new uint256[](pos);
            for (uint256 i; i < pos; ++i) {
                sofar[i] = all[i];
            }
            vm.assertEq(root, _rustRoot(sofar), "root after the batch = Rust root");
            vm.assertEq(h.currentRoot(), root, "current root");
            vm.assertTrue(h.knownRoots(root), "root remembered");
        }
    }

    /// @notice Two batches where the first ends inside a right subtree that the second
    ///         completes (3 then 1 leaves: at height 1 the second batch needs the node of
    ///         leaves 0-1, computed by the first): the second needs that left sibling from
    ///         the frontier. NoxPool v2 as first written lost it.
    function test_a_batch_ending_inside_a_right_subtree_then_the_next_give_the_rust_root() public {
        uint8[2][5] memory splits = [[3, 1], [1, 5], [6, 1], [2, 5], [20, 13]];
        for (uint256 s; s < splits.length; ++s) {
            NoxPoolHarness h = new NoxPoolHarness();
            uint256 pos;
            for (uint256 k; k < 2; ++k) {
                uint256[] memory batch = new uint256[](splits[s][k]);
                for (uint256 i; i < batch.length; ++i) {
                    batch[i] = pos + i + 1;
                }
                uint256 root = h.insertBatch(batch, pos);
                pos += batch.length;
                uint256[] memory sofar = new uint256[](pos);
                for (uint256 i; i < pos; ++i) {
                    sofar[i] = i + 1;
                }
                vm.assertEq(root, _rustRoot(sofar), "root = Rust root");
            }
        }
    }

    /// @notice Through the real path: deposits, flushed one at a time (each an open
    ///         segment of one leaf) or a few at a time.
    function test_deposits_flushed_as_they_come_give_the_rust_roots() public {
        for (uint256 i; i < 5; ++i) {
            _queueNotes(1, 1);
            _flushPending(FLUSHER);
        }
        _queueNotes(3, 2);
        _flushPending(FLUSHER);
    }

    /// @notice Deposits with flushes at random moments, some of the closed segments only,
    ///         some of everything: every root is Rust's.
    /// forge-config: default.fuzz.runs = 16
    function testFuzz_deposits_and_flushes_in_any_rhythm_give_the_rust_roots(uint256 seed) public {
        uint256 total = 20 + seed % 60;
        for (uint256 k; queued.length < total; ++k) {
            uint256 r = uint256(keccak256(abi.encode(seed, k)));
            _queueNotes(1 + r % 24, seed);
            if ((r >> 8) % 3 == 0) continue;
            (,, uint256 openStart,) = pool.queueState();
            uint256 start = pool.nextIndex();
            if ((r >> 16) % 2 == 0 && openStart > start) {
                // The closed segments only.
                uint256 root = pool.flush(_leaves(start, openStart), _bounties(start, openStart));
                vm.assertEq(root, _rustRoot(_leaves(0, openStart)), "root = Rust root");
            } else {
                _flushPending(FLUSHER);
            }
        }
        if (pool.nextIndex() < queued.length) _flushPending(FLUSHER);
    }

    // ---------------------------------------------------------------- segments

    /// @notice 32 leaves close a segment; segment() and queueState() report both the
    ///         closed and the open one, with a block none of their leaves precedes: the
    ///         block where the segment could start (the pool's deployment, the leaf that
    ///         closed the segment before it, the flush that emptied the open one).
    function test_segments_report_their_end_and_first_block() public {
        uint256 deployed = block.number;
        vm.roll(10);
        _queueNotes(1, 3);
        vm.roll(11);
        _queueNotes(30, 3);
        _assertQueue(0, 31, 0);
        (uint256 end, uint256 firstBlock) = pool.segment(0);
        vm.assertEq(end, 31, "open segment ends at the last queued leaf");
        vm.assertEq(firstBlock, deployed, "the first segment could start at the deployment");
        (,,, uint256 openBlock) = pool.queueState();
        vm.assertEq(openBlock, deployed, "open block");
        vm.assertEq(_closedSegmentWord(0), 0, "open: no closed segment word yet");

        vm.roll(12);
        _queueNotes(1, 3); // leaf 31 closes the segment
        _assertQueue(0, 32, 32);
        (end, firstBlock) = pool.segment(0);
        vm.assertEq(end, 32, "closed segment ends at 32");
        vm.assertEq(firstBlock, deployed, "closed segment keeps its block");
        vm.assertTrue(_closedSegmentWord(0) != 0, "closed segment stored");
        (end, firstBlock) = pool.segment(32);
        vm.assertEq(end, 0, "nothing queued at 32 yet");
        (,,, openBlock) = pool.queueState();
        vm.assertEq(openBlock, 12, "the next segment could start in the block that closed this one");

        vm.roll(20);
        _queueNotes(2, 3);
        (end, firstBlock) = pool.segment(32);
        vm.assertEq(end, 34, "open segment from 32");
        vm.assertEq(firstBlock, 12, "its block: at or before its first leaf's (20)");
        (end,) = pool.segment(1);
        vm.assertEq(end, 0, "no segment starts inside another");
        (end,) = pool.segment(40);
        vm.assertEq(end, 0, "none beyond the queue");

        // Flushing the closed segment deletes its word; segment() forgets it.
        pool.flush(_leaves(0, 32), _bounties(0, 32));
        vm.assertEq(_closedSegmentWord(0), 0, "closed segment word deleted");
        (end,) = pool.segment(0);
        vm.assertEq(end, 0, "an inserted segment is no longer reported");
        _assertQueue(32, 34, 32);
        (end, firstBlock) = pool.segment(32);
        vm.assertEq(end, 34, "open segment still reported");
        vm.assertEq(firstBlock, 12, "with its block");

        // Flushing the open segment: the next one could start in the flush's block.
        vm.roll(25);
        _flushPending(FLUSHER);
        (,,, openBlock) = pool.queueState();
        vm.assertEq(openBlock, 25, "the flush's block");
    }

    /// @notice A closed segment is flushed with exactly its leaves, in order, and a flush
    ///         ends at a segment's end.
    function test_RevertWhen_the_leaves_are_not_exactly_whole_segments() public {
        _queueNotes(32, 4);
        uint256[] memory seg = _leaves(0, 32);

        uint256[] memory bad = _leaves(0, 32);
        bad[7] ^= 1;
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // a wrong leaf
        bad = _leaves(0, 32);
        (bad[3], bad[4]) = (bad[4], bad[3]);
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // wrong order
        bad = _leaves(0, 31);
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // a missing leaf
        bad = _leaves(0, 32);
        bad[31] = bad[30];
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // a leaf listed twice
        bad = new uint256[](33);
        for (uint256 i; i < 32; ++i) {
            bad[i] = seg[i];
        }
        bad[32] = 12345;
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // one extra leaf, nothing queued after
        _flushReverts(0, new uint256[](0), NoxPool.WrongLeaves.selector); // no leaves

        _queueNotes(3, 4); // an open segment of three after the closed one
        bad = _leaves(0, 33);
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // ends inside the open segment
        bad = _leaves(0, 34);
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // still inside
        bad = new uint256[](36);
        for (uint256 i; i < 35; ++i) {
            bad[i] = queued[i];
        }
        _flushReverts(0, bad, NoxPool.WrongLeaves.selector); // one extra after the open segment
        bad = _leaves(1, 33);
        _flushReverts(1, bad, NoxPool.WrongLeaves.selector); // not from nextIndex()
        _assertQueue(0, 35, 32);

        pool.flush(seg, _bounties(0, 32));
        vm.assertEq(pool.currentRoot(), _rustRoot(seg), "the closed segment alone");
        _flushPending(FLUSHER);
    }

    /// @dev A flush of `leaves` in the place of the leaves from `from` on, each sent with
    ///      the bounty recorded at its position (0 past the queue), reverts with `err`.
    function _flushReverts(uint256 from, uint256[] memory leaves, bytes4 err) internal {
        uint256[] memory b = new uint256[](leaves.length);
        for (uint256 i; i < b.length && from + i < bounties.length; ++i) {
            b[i] = bounties[from + i];
        }
        _flushReverts(leaves, b, err);
    }

    /// @dev The flusher's flush of `leaves` with bounties `b` reverts with `err`.
    function _flushReverts(uint256[] memory leaves, uint256[] memory b, bytes4 err) internal {
        vm.prank(FLUSHER);
        vm.expectRevert(err);
        pool.flush(leaves, b);
    }

    /// @notice One flush can insert several closed segments and the open one.
    function test_several_segments_flush_at_once() public {
        _queueNotes(69, 5);
        _assertQueue(0, 69, 64);
        vm.assertTrue(_closedSegmentWord(0) != 0 && _closedSegmentWord(32) != 0, "two closed segments");
        _flushPending(FLUSHER);
        _assertQueue(69, 69, 69);
        vm.assertEq(_closedSegmentWord(0) | _closedSegmentWord(32), 0, "closed segments deleted");
        // Then the next segment, from 69 to 96, and a full aligned one.
        _queueNotes(27 + 32, 5);
        _assertQueue(69, 128, 128);
        _flushPending(FLUSHER);
    }

    function test_RevertWhen_nothing_is_pending() public {
        _flushReverts(0, new uint256[](0), NoxPool.NothingPending.selector);
        uint256[] memory one = new uint256[](1);
        one[0] = 1;
        _flushReverts(0, one, NoxPool.NothingPending.selector);
        _queueNotes(1, 6);
        _flushPending(FLUSHER);
        one[0] = queued[0];
        _flushReverts(0, one, NoxPool.NothingPending.selector); // already inserted
    }

    /// @notice The open segment flushed early: the next closed segment starts unaligned
    ///         (here 5 to 32), could start in the flush's block, and flushes with exactly
    ///         its 27 leaves.
    function test_an_early_flushed_segment_refills_from_an_unaligned_start() public {
        _queueNotes(5, 7);
        vm.roll(30);
        _flushPending(FLUSHER);
        _assertQueue(5, 5, 5);
        (uint256 end,) = pool.segment(5);
        vm.assertEq(end, 0, "nothing queued at 5");

        vm.roll(33);
        _queueNotes(27, 7);
        _assertQueue(5, 32, 32);
        uint256 firstBlock;
        (end, firstBlock) = pool.segment(5);
        vm.assertEq(end, 32, "the unaligned segment closes at 32");
        vm.assertEq(firstBlock, 30, "its block: the flush's, before its first leaf's (33)");
        vm.assertTrue(_closedSegmentWord(5) != 0, "stored by its first leaf");
        _queueNotes(4, 7); // the next open segment, aligned

        _flushReverts(5, _leaves(5, 31), NoxPool.WrongLeaves.selector);
        _flushReverts(5, _leaves(5, 33), NoxPool.WrongLeaves.selector);
        pool.flush(_leaves(5, 32), _bounties(5, 32));
        vm.assertEq(pool.currentRoot(), _rustRoot(_leaves(0, 32)), "root = Rust root");
        vm.assertEq(_closedSegmentWord(5), 0, "deleted");
        _assertQueue(32, 36, 32);
        _queueNotes(28, 7); // fills 32 to 64
        _flushPending(FLUSHER);
    }

    // ------------------------------------------------------------ forced insertion

    /// @notice A note's owner, whoever they are, can insert the open segment holding their
    ///         note with whatever was queued before it, the leaves and their bounties read
    ///         from the Queued events alone, even when it is a single leaf; the owner is
    ///         paid those bounties.
    /// forge-config: default.fuzz.runs = 64
    /// forge-config: default.isolate = false
    function testFuzz_an_owner_can_insert_their_own_note(address owner, uint8 before, bool flushBefore) public {
        // An account that can take its bounty (a contract refusing ETH fails its own flush:
        // test_RevertWhen_the_flusher_refuses_its_bounty).
        vm.assume(owner != address(vm) && owner != CONSOLE && owner.code.length == 0 && uint160(owner) > 0xffff);
        cheats.fee(1 gwei);
        cheats.recordLogs();
        _queueNotes(bound(before, 0, 40), 8);
        if (flushBefore && queued.length != 0) _flushPending(FLUSHER);
        cheats.fee(2 gwei); // the owner's note pays another bounty than the leaves before it
        _queueNotes(1, 9); // the owner's note
        uint256 mine = queued.length - 1;

        // The pending leaves and bounties, by their indexes in the Queued events.
        uint256 first = pool.nextIndex();
        uint256[] memory leaves = new uint256[](mine + 1 - first);
        uint256[] memory b = new uint256[](leaves.length);
        uint256 sum;
        PoolCheats.Log[] memory logs = cheats.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != address(pool) || logs[i].topics[0] != NoxPool.Queued.selector) continue;
            uint256 index = uint256(logs[i].topics[1]);
            if (index < first) continue;
            (leaves[index - first], b[index - first]) = abi.decode(logs[i].data, (uint256, uint256));
            sum += b[index - first];
        }
        uint256 balanceBefore = owner.balance;
        vm.prank(owner);
        uint256 root = pool.flush(leaves, b);
        vm.assertEq(pool.nextIndex(), mine + 1, "the owner's note is in the tree");
        vm.assertEq(root, _rustRoot(_leaves(0, mine + 1)), "root = Rust root");
        vm.assertEq(sum, _bountySum(first, mine + 1), "the events name the bounties sent");
        vm.assertEq(owner.balance - balanceBefore, sum, "the owner is paid the bounties");
    }

    /// @notice Nobody can keep a note out: another flush first only makes the owner's
    ///         flush unnecessary (NothingPending); a leaf queued in between makes the owner
    ///         send it along, at most until the segment closes, after which it is fixed.
    function test_nobody_can_block_an_owners_flush() public {
        _queueNotes(1, 10);
        uint256[] memory mine = _pending();
        uint256[] memory mineBounties = _pendingBounties();
        vm.prank(OTHER);
        pool.flush(mine, mineBounties);
        vm.prank(OWNER);
        vm.expectRevert(NoxPool.NothingPending.selector);
        pool.flush(mine, mineBounties);
        vm.assertEq(pool.currentRoot(), _rustRoot(_leaves(0, 1)), "the note is in the tree anyway");

        // A leaf queued after the owner read the queue: the owner sends it along.
        _queueNotes(1, 11);
        mine = _pending();
        mineBounties = _pendingBounties();
        _queueNotes(1, 12);
        vm.prank(OWNER);
        vm.expectRevert(NoxPool.WrongLeaves.selector);
        pool.flush(mine, mineBounties);
        mine = _pending();
        mineBounties = _pendingBounties();
        vm.prank(OWNER);
        pool.flush(mine, mineBounties);
        vm.assertEq(pool.currentRoot(), _rustRoot(_leaves(0, 3)), "the owner's note inserted");

        // A closed segment is fixed: leaves queued after it do not change its flush.
        _queueNotes(BATCH - queued.length, 13); // closes the segment 3 to 32
        uint256[] memory closed = _pending();
        uint256[] memory closedBounties = _pendingBounties();
        _queueNotes(2, 14);
        vm.prank(OWNER);
        pool.flush(closed, closedBounties);
        vm.assertEq(pool.currentRoot(), _rustRoot(_leaves(0, BATCH)), "the closed segment inserted");
    }

    // ------------------------------------------------------------------- bounty

    /// @notice Each deposit prepays its leaf's insertion: `deposit` on top of the value,
    ///         `depositERC20` as msg.value.
    /// forge-config: default.isolate = false
    function test_RevertWhen_a_deposit_sends_less_than_the_bounty() public {
        cheats.fee(7 gwei);
        uint256 bounty = pool.insertionBounty();
        vm.assertEq(bounty, 7 gwei * pool.INSERT_GAS_PER_LEAF(), "bounty = base fee x gas per leaf");
        vm.startPrank(DEPOSITOR);
        vm.expectRevert(abi.encodeWithSelector(NoxPool.BountyTooLow.selector, bounty));
        pool.deposit{value: 1 + bounty - 1}(1, 1);
        vm.expectRevert(abi.encodeWithSelector(NoxPool.BountyTooLow.selector, bounty));
        pool.deposit{value: 0}(1, 1); // less than the value itself

        NoxTestToken token = new NoxTestToken(1e18);
        token.approve(address(pool), 1e18);
        vm.expectRevert(abi.encodeWithSelector(NoxPool.BountyTooLow.selector, bounty));
        pool.depositERC20{value: bounty - 1}(token, 1e18, 1);
        pool.depositERC20{value: bounty}(token, 1e18, 1);
        pool.deposit{value: 1 + bounty}(1, 1);
        vm.stopPrank();
        _assertQueue(0, 2, 0);
        vm.assertEq(address(pool).balance, 1 + 2 * bounty, "pool holds the note and the two bounties");
    }

    /// @notice A flusher is paid exactly the bounties of the leaves it inserts, whatever
    ///         each leaf's transaction sent (some send more than needed); the pool always
    ///         holds the notes' value plus the bounties of the leaves still queued.
    /// forge-config: default.fuzz.runs = 48
    /// forge-config: default.isolate = false
    function testFuzz_flushers_are_paid_the_bounties_of_the_leaves_they_insert(
        uint256 seed,
        uint8 count,
        uint64 baseFee
    ) public {
        cheats.fee(bound(baseFee, 1, 500 gwei));
        uint256 bounty = pool.insertionBounty();
        uint256 total = bound(count, 1, 80);
        for (uint256 i; i < total; ++i) {
            uint256 extra = uint256(keccak256(abi.encode(seed, i))) % bounty; // some pay more
            uint256 commitment = PoseidonT4.hash(0, 1, i + 1);
            vm.expectEmit(true, true, true, true);
            emit NoxPool.Queued(i, commitment, bounty + extra);
            vm.prank(DEPOSITOR);
            pool.deposit{value: 1 + bounty + extra}(1, i + 1);
            _record(commitment, bounty + extra);
        }
        _assertQueue(0, total, total / BATCH * BATCH);
        vm.assertEq(address(pool).balance, total + _bountiesQueued(), "notes + bounties queued");

        (,, uint256 openStart,) = pool.queueState();
        // First the closed segments only (when there are some), then everything.
        if (openStart > 0 && openStart < total) _flushPaysItsLeavesBounties(address(0xF1), openStart, total);
        _flushPaysItsLeavesBounties(address(0xF2), total, total);
        vm.assertEq(address(pool).balance, total, "the notes alone: every bounty paid out");
    }

    /// @dev `flusher` flushes the pending leaves up to `end` of the `total` queued: it is
    ///      paid the sum of their bounties, which the Flushed event reports; the pool keeps
    ///      the notes' 1 wei each and the bounties of the leaves from `end` on.
    function _flushPaysItsLeavesBounties(address flusher, uint256 end, uint256 total) internal {
        uint256 start = pool.nextIndex();
        uint256 paid = _bountySum(start, end);
        uint256 root = _rustRoot(_leaves(0, end));
        uint256 balanceBefore = flusher.balance;
        vm.expectEmit(true, true, true, true);
        emit NoxPool.Flushed(start, end - start, root, flusher, paid);
        vm.prank(flusher);
        pool.flush(_leaves(start, end), _bounties(start, end));
        vm.assertEq(flusher.balance - balanceBefore, paid, "flusher paid its leaves' bounties");
        vm.assertEq(address(pool).balance, total + _bountySum(end, total), "pool = notes + bounties still queued");
    }

    /// @notice The chain binds each leaf to its bounty: a flush that names another bounty
    ///         for any leaf (more, less, or the same sum spread differently), or another
    ///         number of bounties than leaves, inserts nothing and pays nothing.
    /// forge-config: default.isolate = false
    function test_RevertWhen_the_bounties_are_not_the_queued_ones() public {
        cheats.fee(1 gwei);
        _queueNotes(BATCH + 1, 17); // a closed segment, then the open one
        cheats.fee(2 gwei);
        _queueNotes(2, 17); // the open segment's last two leaves pay twice as much
        uint256 total = queued.length;
        uint256[] memory leaves = _leaves(0, total);
        bytes4 wrong = NoxPool.WrongLeaves.selector;

        uint256[] memory b = _bounties(0, total);
        b[5] += 1; // more for a leaf of the closed segment
        _flushReverts(leaves, b, wrong);
        b = _bounties(0, total);
        b[total - 1] -= 1; // less for the open segment's last leaf
        _flushReverts(leaves, b, wrong);
        b = _bounties(0, total);
        (b[BATCH], b[BATCH + 1]) = (b[BATCH + 1], b[BATCH]); // the same sum, moved between leaves
        _flushReverts(leaves, b, wrong);
        _flushReverts(leaves, new uint256[](total), wrong); // no bounty at all
        _flushReverts(leaves, _bounties(0, total - 1), wrong); // one bounty fewer than leaves
        b = new uint256[](total + 1);
        for (uint256 i; i < total; ++i) {
            b[i] = bounties[i];
        }
        _flushReverts(leaves, b, wrong); // one bounty more
        _flushReverts(leaves, new uint256[](0), wrong); // none
        _flushReverts(_leaves(0, BATCH), _bounties(0, total), wrong); // the closed segment, every bounty

        _assertQueue(0, total, BATCH);
        vm.assertEq(address(pool).balance, total + _bountiesQueued(), "nothing paid");
        _flushPending(FLUSHER); // the bounties the events name: paid their sum
        vm.assertEq(address(pool).balance, total, "the notes alone");
    }

    /// @notice A flusher that refuses its bounty only fails its own flush.
    /// forge-config: default.isolate = false
    function test_RevertWhen_the_flusher_refuses_its_bounty() public {
        cheats.fee(1 gwei);
        _queueNotes(1, 16);
        address refuser = address(new RefusesEth());
        uint256[] memory leaves = _pending();
        uint256[] memory b = _pendingBounties();
        vm.prank(refuser);
        vm.expectRevert(NoxPool.PaymentFailed.selector);
        pool.flush(leaves, b);
        _flushPending(FLUSHER); // anyone else can
    }

    // ------------------------------------------------------------------ tree full

    /// @notice Leaf 2^20 - 1 is the last one: after it, nothing can be queued.
    function test_RevertWhen_a_deposit_would_need_a_leaf_beyond_the_tree() public {
        _setQueue(0, MAX_LEAVES - 1, MAX_LEAVES - 1, block.number);
        vm.prank(DEPOSITOR);
        uint256 index = pool.deposit{value: 1}(1, 1);
        vm.assertEq(index, MAX_LEAVES - 1, "the last leaf");
        _assertQueue(0, MAX_LEAVES, MAX_LEAVES);
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.TreeFull.selector);
        pool.deposit{value: 1}(1, 1);
    }
}

// ------------------------------------------------------------------- executor gas

/// @notice NoxExecutor gives the call its gas or reverts before the call. The executor
///         is deployed here, so this test is its pool.
contract NoxExecutorTest is NoxPoolTestBase {
    uint256 constant CALL_GAS = 200_000;
    /// @dev What run() spends before reading gasleft(): the dispatch.
    uint256 constant ENTRY_OVERHEAD = 200;

    NoxExecutor executor;
    AfterTheCallExecutor afterTheCall;
    StarvableTarget target;
    bytes run = abi.encodeCall(StarvableTarget.run, ());

    function setUp() public {
        executor = new NoxExecutor();
        afterTheCall = new AfterTheCallExecutor();
        target = new StarvableTarget();
    }

    /// @notice The target's work succeeds with its call gas and fails starved of a
    ///         quarter of it.
    function test_the_starvable_target_needs_less_than_its_call_gas() public {
        InnerWork work = new InnerWork();
        uint256 g = gasleft();
        work.work();
        g -= gasleft();
        vm.assertLe(140_000, g, "the work needs over 140k");
        vm.assertLe(g, 160_000, "and under 160k");
        vm.assertTrue(executor.execute(address(target), CALL_GAS, run), "call succeeded");
        vm.assertTrue(target.workSucceeded(), "work succeeded with the call gas");
        vm.assertLe(CALL_GAS - ENTRY_OVERHEAD, target.entryGas(), "entry gas");
        vm.assertLe(target.entryGas(), CALL_GAS, "no more than the call gas");
        vm.assertTrue(executor.execute(address(target), CALL_GAS * 3 / 4, run), "starved call returns");
        vm.assertFalse(target.workSucceeded(), "work ran out of gas");
    }

    /// @notice Whatever gas the transaction carries, either the executor reverts before
    ///         the call or the target starts with its call gas and its work succeeds.
    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_the_call_gets_its_gas_or_the_execution_reverts(uint256 txGas) public {
        txGas = bound(txGas, 30_000, 3 * CALL_GAS);
        try executor.execute{gas: txGas}(address(target), CALL_GAS, run) returns (bool ok) {
            vm.assertTrue(ok, "call succeeded");
            vm.assertLe(CALL_GAS - ENTRY_OVERHEAD, target.entryGas(), "target started with its call gas");
            vm.assertTrue(target.workSucceeded(), "its work succeeded");
        } catch (bytes memory reason) {
            vm.assertEq(
                keccak256(reason),
                keccak256(abi.encodeWithSelector(NoxExecutor.InsufficientCallGas.selector)),
                "reverted InsufficientCallGas"
            );
            vm.assertEq(target.entryGas(), 0, "the target's call undone");
            // Refused only when the call could not have had its gas (the executor's own
            // instructions before the check are well under 2,000 gas).
            vm.assertLe(txGas, CALL_GAS * 64 / 63 + 3000 + 2000, "refused with enough gas");
        }
    }

    /// @notice The check the executor made after the call before v2 let a starved call
    ///         through: the target caught its work's out-of-gas and returned with gas to
    ///         spare, so the executor saw enough left. The same gas now reverts.
    function test_the_after_the_call_check_let_a_starved_call_through() public {
        uint256 found;
        // From just enough gas downwards: the first amount that starves the work.
        for (uint256 txGas = CALL_GAS * 64 / 63 + 5000; txGas > 100_000; txGas -= 250) {
            try afterTheCall.execute{gas: txGas}(address(target), CALL_GAS, run) returns (bool ok) {
                if (ok && !target.workSucceeded()) {
                    found = txGas;
                    break;
                }
            } catch {}
        }
        vm.assertTrue(found != 0, "a gas amount starves the call and passes the old check");
        log(
            string.concat(
                "after-the-call check passed with ",
                vm.toString(found),
                " gas: the target started with ",
                vm.toString(target.entryGas()),
                " of its ",
                vm.toString(CALL_GAS),
                " and its work failed"
            )
        );
        vm.assertLe(target.entryGas(), CALL_GAS - 20_000, "the call ran well short");
        vm.expectRevert(NoxExecutor.InsufficientCallGas.selector);
        executor.execute{gas: found}(address(target), CALL_GAS, run);
    }

    function test_RevertWhen_the_executor_is_called_by_another_than_its_pool() public {
        vm.prank(address(0xBAD));
        vm.expectRevert(NoxExecutor.OnlyPool.selector);
        executor.execute(address(target), CALL_GAS, run);
    }
}

// ------------------------------------------------------------------- spends

/// @notice NoxPool against proofs made by nox-circuits (contracts/test/fixtures/spend.json,
///         `cargo run -p nox-circuits --bin nox-zk -- fixtures`). The token, the pool and
///         the target come from fixed deployers so that their addresses match the fixtures.
contract NoxPoolTest is NoxPoolTestBase {
    address constant POOL_DEPLOYER = address(0x9001);
    address constant TOKEN_DEPLOYER = address(0x7001);
    address constant TARGET_DEPLOYER = address(0x7A59);
    address constant NOOP_DEPLOYER = address(0x0009);
    uint256 constant Q = SpendVerifier.BASE_MODULUS;

    string json;
    NoxTestToken token;
    RelayTarget target;
    NoopTarget noop;
    address relayer;
    address recipient;
    uint256 deadline;

    function setUp() public {
        json = vm.readFile(string.concat(vm.projectRoot(), "/contracts/test/fixtures/spend.json"));
        vm.prank(TOKEN_DEPLOYER);
        token = new NoxTestToken(1_000_000e18);
        vm.prank(POOL_DEPLOYER);
        pool = new NoxPool();
        vm.prank(TARGET_DEPLOYER);
        target = new RelayTarget();
        vm.prank(NOOP_DEPLOYER);
        noop = new NoopTarget();
        vm.assertEq(address(noop), vm.parseJsonAddress(json, ".noop"), "noop address");
        vm.assertEq(address(pool), vm.parseJsonAddress(json, ".pool"), "pool address");
        vm.assertEq(address(token), vm.parseJsonAddress(json, ".token"), "token address");
        vm.assertEq(address(target), vm.parseJsonAddress(json, ".target"), "target address");
        relayer = vm.parseJsonAddress(json, ".relayer");
        recipient = vm.parseJsonAddress(json, ".recipient");
        deadline = vm.parseJsonUint(json, ".deadline");

        vm.deal(DEPOSITOR, 10 ether);
        vm.prank(TOKEN_DEPLOYER);
        vm.assertTrue(token.transfer(DEPOSITOR, 10_000e18), "depositor funded");
        vm.prank(DEPOSITOR);
        token.approve(address(pool), type(uint256).max);
    }

    /// @dev The fixture's deposit `i`, queued; its "rootAfter" is the root once it and the
    ///      deposits before it are inserted.
    function _fixtureDeposit(uint256 i) internal returns (uint256 rootAfter) {
        string memory d = string.concat(".deposits[", vm.toString(i), "]");
        uint256 asset = vm.parseJsonUint(json, string.concat(d, ".asset"));
        uint256 value = vm.parseJsonUint(json, string.concat(d, ".value"));
        uint256 secret = vm.parseJsonUint(json, string.concat(d, ".secret"));
        uint256 commitment = vm.parseJsonUint(json, string.concat(d, ".commitment"));
        uint256 bounty = pool.insertionBounty();
        // A fixture asset is 0 or a token address.
        // forge-lint: disable-next-line(unsafe-typecast)
        IERC20 assetToken = IERC20(address(uint160(asset)));
        vm.expectEmit(true, true, true, true);
        emit NoxPool.Queued(i, commitment, bounty);
        vm.prank(DEPOSITOR);
        uint256 index = asset == 0
            ? pool.deposit{value: value + bounty}(value, secret)
            : pool.depositERC20{value: bounty}(assetToken, value, secret);
        vm.assertEq(index, i, "leaf index");
        _record(commitment, bounty);
        return vm.parseJsonUint(json, string.concat(d, ".rootAfter"));
    }

    /// @dev The four fixture deposits, queued and not inserted.
    function _queueFixtureDeposits() internal returns (uint256 rootAfter) {
        for (uint256 i; i < 4; ++i) {
            rootAfter = _fixtureDeposit(i);
        }
    }

    /// @dev The fixture deposits, inserted: the fixture proofs' root is known.
    modifier withInsertedNotes() {
        uint256 rootAfter = _queueFixtureDeposits();
        vm.assertEq(_flushPending(FLUSHER), rootAfter, "root = fixture root");
        _;
    }

    function _proof(string memory which) internal view returns (uint256[8] memory p) {
        uint256[] memory a = vm.parseJsonUintArray(json, string.concat(".", which, ".proof"));
        for (uint256 i; i < 8; ++i) {
            p[i] = a[i];
        }
    }

    function _inputs(string memory which) internal view returns (NoxPool.SpendInputs memory s) {
        uint256[] memory a = vm.parseJsonUintArray(json, string.concat(".", which, ".inputs"));
        s = NoxPool.SpendInputs(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
    }

    function _data(string memory which) internal view returns (bytes memory) {
        return vm.parseJsonBytes(json, string.concat(".", which, ".data"));
    }

    function _callGas(string memory which) internal view returns (uint256) {
        return vm.parseJsonUint(json, string.concat(".", which, ".callGas"));
    }

    /// @dev The call a fixture's proof was made for.
    function _to(string memory which) internal view returns (address) {
        return keccak256(bytes(which)) == keccak256("relayNoop") ? address(noop) : address(target);
    }

    /// @dev Anyone submits the fixture withdrawal with its bounty; the change is queued.
    function _withdraw() internal {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256 bounty = pool.insertionBounty();
        pool.withdraw{value: bounty}(_proof("withdraw"), s);
        _record(s.changeCommitment, bounty);
    }

    /// @dev `from` relays fixture `which` with these inputs, target, deadline and data (its
    ///      proof and call gas as made, the current bounty), expecting `revertData` unless
    ///      it is empty.
    function _relayWith(
        string memory which,
        NoxPool.SpendInputs memory s,
        address from,
        address to,
        uint256 until,
        bytes memory data,
        bytes memory revertData
    ) internal returns (bool ok) {
        uint256[8] memory p = _proof(which);
        uint256 callGas = _callGas(which);
        uint256 bounty = pool.insertionBounty();
        vm.deal(from, from.balance + bounty);
        if (revertData.length != 0) vm.expectRevert(revertData);
        vm.prank(from);
        ok = pool.relay{value: bounty}(p, s, to, callGas, until, data);
        if (revertData.length == 0) _record(s.changeCommitment, bounty);
    }

    /// @dev The relayer relays fixture `which` as made.
    function _relay(string memory which) internal returns (bool) {
        return _relayWith(which, _inputs(which), relayer, _to(which), deadline, _data(which), "");
    }

    /// @dev The relayer relays fixture `which` as made, expecting its events: the change
    ///      note's Queued with the bounty sent, then Relayed with the nullifier, the relayer
    ///      and the call's outcome `success`.
    function _relayExpectingEvents(string memory which, bool success) internal returns (bool ok) {
        NoxPool.SpendInputs memory s = _inputs(which);
        uint256[8] memory p = _proof(which);
        bytes memory data = _data(which);
        uint256 callGas = _callGas(which);
        address to = _to(which);
        uint256 bounty = pool.insertionBounty();
        vm.deal(relayer, relayer.balance + bounty);
        vm.expectEmit(true, true, true, true);
        emit NoxPool.Queued(queued.length, s.changeCommitment, bounty);
        vm.expectEmit(true, true, true, true);
        emit NoxPool.Relayed(s.nullifier, relayer, success);
        vm.prank(relayer);
        ok = pool.relay{value: bounty}(p, s, to, callGas, deadline, data);
        _record(s.changeCommitment, bounty);
    }

    function _relayReverts(string memory which, NoxPool.SpendInputs memory s, address to, bytes memory data, bytes4 err)
        internal
    {
        _relayWith(which, s, relayer, to, deadline, data, abi.encodeWithSelector(err));
    }

    // ------------------------------------------------------------------ happy paths

    /// @notice The fixture deposits flushed one by one: each root is the fixture's.
    function test_fixture_deposits_flushed_one_by_one_give_the_fixture_roots() public {
        for (uint256 i; i < 4; ++i) {
            uint256 rootAfter = _fixtureDeposit(i);
            vm.assertFalse(pool.knownRoots(rootAfter), "queued: not in any root yet");
            vm.assertEq(_flushPending(FLUSHER), rootAfter, "root = fixture rootAfter");
        }
    }

    /// @notice A queued note cannot be spent: no root contains it until a flush.
    function test_RevertWhen_a_note_is_spent_before_its_flush() public {
        uint256 rootAfter = _queueFixtureDeposits();
        vm.assertFalse(pool.knownRoots(rootAfter), "the notes' root is not known yet");
        _relayReverts("relayEth", _inputs("relayEth"), address(target), _data("relayEth"), NoxPool.UnknownRoot.selector);
        NoxPool.SpendInputs memory w = _inputs("withdraw");
        uint256[8] memory wp = _proof("withdraw");
        vm.expectRevert(NoxPool.UnknownRoot.selector);
        pool.withdraw(wp, w);
        _flushPending(FLUSHER);
        vm.assertTrue(_relay("relayEth"), "spendable once inserted");
    }

    /// @notice The owner of a queued note (any address) inserts it and spends it.
    function test_an_owner_flushes_their_note_and_spends_it() public {
        _queueFixtureDeposits();
        address owner = address(0xA0);
        uint256[] memory leaves = _pending();
        uint256[] memory b = _pendingBounties();
        vm.prank(owner);
        pool.flush(leaves, b);
        vm.assertTrue(_relay("relayEth"), "spent");
    }

    function test_withdraw_pays_the_recipient_and_queues_the_change() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        vm.expectEmit(true, true, true, true);
        emit NoxPool.Queued(4, s.changeCommitment, 0);
        pool.withdraw(p, s);
        _record(s.changeCommitment, 0);
        vm.assertEq(recipient.balance, 0.5 ether, "recipient paid");
        vm.assertTrue(pool.nullifierSpent(s.nullifier), "nullifier spent");
        _assertQueue(4, 5, 4);
        vm.assertEq(address(pool).balance, 3.5 ether, "pool keeps the rest");
    }

    /// @notice The relayer is paid, the call runs as the executor, and the relay emits the
    ///         change note's Queued, then Relayed with the call's outcome.
    function test_relay_pays_the_relayer_then_calls_as_the_executor() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        vm.assertTrue(_relayExpectingEvents("relayEth", true), "call succeeded");
        vm.assertEq(relayer.balance, 0.01 ether, "relayer paid");
        vm.assertEq(target.lastCaller(), address(pool.executor()), "target sees the executor");
        vm.assertEq(target.lastValue(), 42, "calldata passed");
        vm.assertTrue(pool.nullifierSpent(s.nullifier), "nullifier spent");
        _assertQueue(4, 5, 4);
    }

    function test_relay_pays_in_tokens() public withInsertedNotes {
        _relay("relayToken");
        vm.assertEq(token.balanceOf(relayer), 5e18, "relayer paid in tokens");
        vm.assertEq(token.balanceOf(address(pool)), 995e18, "pool keeps the rest");
    }

    function test_flush_inserts_the_change_notes_and_roots_match_rust() public withInsertedNotes {
        _withdraw();
        _relay("relayEth");
        _relay("relayToken");
        _assertQueue(4, 7, 4);
        _flushPending(FLUSHER); // the root is checked against Rust's for the seven leaves
        _assertQueue(7, 7, 7);
        uint256[] memory again = _leaves(4, 7);
        uint256[] memory againBounties = _bounties(4, 7);
        vm.expectRevert(NoxPool.NothingPending.selector);
        pool.flush(again, againBounties);
        vm.assertTrue(pool.nullifierSpent(_inputs("relayToken").nullifier), "still spent");
    }

    /// @notice A relayed call cannot re-enter the pool.
    function test_relayed_call_cannot_reenter() public withInsertedNotes {
        vm.etch(address(noop), type(ReentrantNoop).runtimeCode);
        vm.assertTrue(_relay("relayNoop"), "the call ran");
        vm.assertEq(ReentrantNoop(address(noop)).refused(), 5, "all five re-entries refused by the guard");
    }

    /// @notice A failing call does not undo the payment or the spend.
    function test_a_failing_call_keeps_the_payment_and_the_spend() public withInsertedNotes {
        vm.etch(address(noop), type(FailingNoop).runtimeCode);
        NoxPool.SpendInputs memory s = _inputs("relayNoop");
        vm.assertFalse(_relayExpectingEvents("relayNoop", false), "the call failed");
        vm.assertEq(relayer.balance, 0.01 ether, "relayer paid anyway");
        vm.assertTrue(pool.nullifierSpent(s.nullifier), "spent");
        _assertQueue(4, 5, 4);
    }

    // -------------------------------------------------------------------- deadline

    function test_RevertWhen_the_deadline_has_passed() public withInsertedNotes {
        vm.warp(deadline + 1);
        _relayWith(
            "relayEth",
            _inputs("relayEth"),
            relayer,
            address(target),
            deadline,
            _data("relayEth"),
            abi.encodeWithSelector(NoxPool.Expired.selector)
        );
        vm.warp(deadline);
        vm.assertTrue(_relay("relayEth"), "at the deadline itself the relay goes through");
    }

    function test_RevertWhen_the_deadline_is_not_the_proofs() public withInsertedNotes {
        bytes memory err = abi.encodeWithSelector(NoxPool.WrongExecution.selector);
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        bytes memory data = _data("relayEth");
        _relayWith("relayEth", s, relayer, address(target), deadline + 1, data, err);
        _relayWith("relayEth", s, relayer, address(target), deadline - 1, data, err);
        _relayWith("relayEth", s, relayer, address(target), type(uint256).max, data, err);
    }

    // ---------------------------------------------------------------------- bounty

    /// @notice A spend queues a change note: it pays that note's bounty too.
    /// forge-config: default.isolate = false
    function test_RevertWhen_a_spend_sends_less_than_the_bounty() public withInsertedNotes {
        cheats.fee(3 gwei);
        uint256 bounty = pool.insertionBounty();
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        vm.expectRevert(abi.encodeWithSelector(NoxPool.BountyTooLow.selector, bounty));
        pool.withdraw{value: bounty - 1}(p, s);

        s = _inputs("relayEth");
        p = _proof("relayEth");
        bytes memory data = _data("relayEth");
        uint256 callGas = _callGas("relayEth");
        vm.deal(relayer, bounty);
        vm.prank(relayer);
        vm.expectRevert(abi.encodeWithSelector(NoxPool.BountyTooLow.selector, bounty));
        pool.relay{value: bounty - 1}(p, s, address(target), callGas, deadline, data);

        // With the bounty: the pool holds the notes' ETH plus the bounties queued.
        uint256 before = address(pool).balance;
        _relay("relayEth");
        _withdraw();
        vm.assertEq(_bountiesQueued(), 2 * bounty, "two bounties queued");
        vm.assertEq(address(pool).balance, before - 0.01 ether - 0.5 ether + 2 * bounty, "notes + bounties");
        _assertQueue(4, 6, 4);
        uint256 flusherBefore = FLUSHER.balance;
        _flushPending(FLUSHER);
        vm.assertEq(FLUSHER.balance - flusherBefore, 2 * bounty, "the flusher takes both bounties");
        vm.assertEq(address(pool).balance, before - 0.51 ether, "the notes' ETH alone");
    }

    // -------------------------------------------------------------------- tree full

    /// @notice A spend needs a leaf for its change: with every index taken it reverts.
    function test_RevertWhen_a_spend_would_need_a_leaf_beyond_the_tree() public withInsertedNotes {
        _setQueue(4, MAX_LEAVES, MAX_LEAVES, block.number);
        _relayReverts("relayEth", _inputs("relayEth"), address(target), _data("relayEth"), NoxPool.TreeFull.selector);
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        vm.expectRevert(NoxPool.TreeFull.selector);
        pool.withdraw(p, s);
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.TreeFull.selector);
        pool.deposit{value: 1}(1, 1);
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.TreeFull.selector);
        pool.depositERC20(token, 1, 1);
        vm.assertFalse(pool.nullifierSpent(s.nullifier), "nothing spent");
    }

    // ------------------------------------------------------------------------- gas

    /// @dev Makes the pool's storage and the accounts a transaction touches cold again,
    ///      as they are at the start of a real transaction.
    function _cool() internal {
        address executor = address(pool.executor());
        cheats.cool(address(pool));
        cheats.cool(executor);
        cheats.cool(address(noop));
        cheats.cool(address(target));
        cheats.cool(address(PoseidonT3));
        cheats.cool(address(PoseidonT4));
    }

    /// @notice GAS GOAL: the relay's own gas (execution gas, as forge's gas report counts
    ///         it: no intrinsic 21,000 or calldata) in steady state, cold storage, the
    ///         call doing nothing, a nonzero bounty: under 300k.
    /// forge-config: default.isolate = false
    function test_gas_relay_excluding_the_action_is_under_300k() public withInsertedNotes {
        cheats.fee(1 gwei);
        _relay("relayEth");
        NoxPool.SpendInputs memory s = _inputs("relayNoop");
        uint256[8] memory p = _proof("relayNoop");
        bytes memory data = _data("relayNoop");
        uint256 callGas = _callGas("relayNoop");
        uint256 bounty = pool.insertionBounty();
        vm.deal(relayer, 1 ether);
        _cool();
        vm.prank(relayer);
        bool ok = pool.relay{value: bounty}(p, s, address(noop), callGas, deadline, data);
        uint256 used = _lastCallGas();
        vm.assertTrue(ok, "noop call succeeded");
        log(string.concat("relay gas (steady state, no-op call): ", vm.toString(used)));
        vm.assertLe(used, 300_000, "GAS GOAL: relay under 300k gas");
    }

    /// @dev The depositor queues `count` 1-wei notes; returns the largest and the summed
    ///      execution gas of their deposits, each from cold storage.
    function _measuredDeposits(uint256 count) internal returns (uint256 largest, uint256 sum) {
        for (uint256 i; i < count; ++i) {
            uint256 bounty = pool.insertionBounty();
            uint256 secret = queued.length + 1000;
            _cool();
            vm.prank(DEPOSITOR);
            pool.deposit{value: 1 + bounty}(1, secret);
            uint256 g = _lastCallGas();
            _record(PoseidonT4.hash(0, 1, secret), bounty);
            sum += g;
            if (g > largest) largest = g;
        }
    }

    /// @dev A flush of every pending leaf from cold storage: its execution gas, and the
    ///      gas its transaction pays for its calldata.
    function _measuredFlush() internal returns (uint256 execution, uint256 calldataGas) {
        uint256 start = pool.nextIndex();
        uint256[] memory leaves = _pending();
        uint256[] memory b = _pendingBounties();
        uint256 balanceBefore = FLUSHER.balance;
        _cool();
        vm.prank(FLUSHER);
        pool.flush(leaves, b);
        execution = _lastCallGas();
        calldataGas = _calldataGas(abi.encodeCall(NoxPool.flush, (leaves, b)));
        vm.assertEq(pool.currentRoot(), _rustRoot(_leaves(0, queued.length)), "root = Rust root");
        vm.assertEq(FLUSHER.balance - balanceBefore, _bountySum(start, queued.length), "flusher paid the bounties");
    }

    /// @notice Deposit, relay and flush gas at a nonzero base fee (the flusher is paid),
    ///         each call from cold storage, and the all-in figures: a relay or a deposit
    ///         plus its leaf's share of a full 32-leaf flush. GAS GOALS: all-in relay
    ///         under 350k, all-in deposit under 150k. Also printed: the relay as a whole
    ///         transaction (what the exit node pays gas for), and a full flush
    ///         transaction's gas per leaf beside INSERT_GAS_PER_LEAF, the gas each leaf's
    ///         bounty pays for.
    /// forge-config: default.isolate = false
    function test_gas_deposit_relay_flush_and_all_in() public withInsertedNotes {
        cheats.fee(1 gwei);
        vm.deal(FLUSHER, 1 ether);
        vm.deal(relayer, 1 ether);
        vm.deal(DEPOSITOR, 100 ether);
        _relay("relayEth"); // leaf 4: the relay's words exist, as in steady state
        NoxPool.SpendInputs memory s = _inputs("relayNoop");
        uint256[8] memory p = _proof("relayNoop");
        bytes memory data = _data("relayNoop");
        uint256 callGas = _callGas("relayNoop");
        uint256 bounty = pool.insertionBounty();
        _cool();
        vm.prank(relayer);
        pool.relay{value: bounty}(p, s, address(noop), callGas, deadline, data);
        uint256 relayGas = _lastCallGas();
        uint256 relayCalldata =
            _calldataGas(abi.encodeCall(NoxPool.relay, (p, s, address(noop), callGas, deadline, data)));
        _record(s.changeCommitment, bounty); // leaf 5
        _flushPending(FLUSHER);

        _queueNotes(1, 20); // leaf 6
        (uint256 flush1,) = _measuredFlush();
        _queueNotes(8, 21); // leaves 7 to 14
        (uint256 flush8,) = _measuredFlush();
        flush8 /= 8;
        _queueNotes(BATCH - queued.length, 22); // up to 32
        _flushPending(FLUSHER);
        (uint256 depositMax, uint256 depositSum) = _measuredDeposits(BATCH); // 32 to 63, aligned
        (uint256 flush32All, uint256 flush32Calldata) = _measuredFlush();
        uint256 flush32 = flush32All / BATCH;
        uint256 deposit = depositSum / BATCH;

        log(string.concat("deposit gas (mean over a segment): ", vm.toString(deposit)));
        log(string.concat("deposit gas (the one closing the segment): ", vm.toString(depositMax)));
        log(string.concat("relay gas (no-op call): ", vm.toString(relayGas)));
        log(string.concat("flush gas per leaf, batch of 1: ", vm.toString(flush1)));
        log(string.concat("flush gas per leaf, batch of 8: ", vm.toString(flush8)));
        log(string.concat("flush gas per leaf, aligned batch of 32: ", vm.toString(flush32)));
        log(string.concat("all-in relay (relay + 1/32 flush): ", vm.toString(relayGas + flush32)));
        log(string.concat("all-in deposit (deposit + 1/32 flush): ", vm.toString(deposit + flush32)));
        vm.assertLe(relayGas + flush32, 350_000, "GAS GOAL: all-in relay under 350k");
        vm.assertLe(deposit + flush32, 150_000, "GAS GOAL: all-in deposit under 150k");
        // The relay as the transaction an exit node sends, the no-op call included: its
        // execution, the intrinsic 21,000 and its exact calldata (refunds not subtracted).
        log(
            string.concat(
                "relay transaction gas (execution + 21,000 + calldata at 16/4 per byte, no-op call): ",
                vm.toString(relayGas + 21_000 + relayCalldata),
                " (calldata: ",
                vm.toString(relayCalldata),
                ")"
            )
        );
        // The bounty's premise, measured and not asserted: a leaf's share of a full flush
        // transaction (execution, the exact calldata: a leaf and a bounty per leaf, and
        // the 21,000) against the gas each leaf prepays. Over it, a flusher of full
        // segments loses money.
        uint256 flush32Tx = (flush32All + flush32Calldata + 21_000) / BATCH;
        log(
            string.concat(
                "flush transaction gas per leaf, batch of 32: ",
                vm.toString(flush32Tx),
                " (INSERT_GAS_PER_LEAF: ",
                vm.toString(pool.INSERT_GAS_PER_LEAF()),
                ")"
            )
        );
    }

    // ---------------------------------------------------------------------- reverts

    function test_RevertWhen_a_nullifier_is_spent_again() public withInsertedNotes {
        _relay("relayEth");
        _relayReverts(
            "relayEth", _inputs("relayEth"), address(target), _data("relayEth"), NoxPool.NullifierSpent.selector
        );
    }

    function test_RevertWhen_another_relayer_submits() public withInsertedNotes {
        bytes memory err = abi.encodeWithSelector(NoxPool.WrongRelayer.selector);
        _relayWith("relayEth", _inputs("relayEth"), address(0xBAD), address(target), deadline, _data("relayEth"), err);
    }

    function test_RevertWhen_the_calldata_is_altered() public withInsertedNotes {
        bytes memory data = _data("relayEth");
        data[data.length - 1] = 0x2b; // 43 instead of 42
        _relayReverts("relayEth", _inputs("relayEth"), address(target), data, NoxPool.WrongExecution.selector);
    }

    function test_RevertWhen_the_target_is_altered() public withInsertedNotes {
        _relayReverts(
            "relayEth", _inputs("relayEth"), address(token), _data("relayEth"), NoxPool.WrongExecution.selector
        );
        _relayReverts("relayEth", _inputs("relayEth"), address(0), _data("relayEth"), NoxPool.ZeroTarget.selector);
    }

    /// @notice The call gas is bound too: a relayer cannot promise less.
    function test_RevertWhen_the_call_gas_is_altered() public withInsertedNotes {
        uint256[8] memory p = _proof("relayEth");
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        bytes memory data = _data("relayEth");
        vm.prank(relayer);
        vm.expectRevert(NoxPool.WrongExecution.selector);
        pool.relay(p, s, address(target), 30_000, deadline, data);
    }

    /// @notice A relayer that sends too little gas for the bound call gas cannot make
    ///         the call fail and keep the fee: the whole relay reverts.
    function test_RevertWhen_a_relayer_sends_too_little_gas_for_the_call() public withInsertedNotes {
        uint256[8] memory p = _proof("relayEth");
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        bytes memory data = _data("relayEth");
        uint256 callGas = _callGas("relayEth");
        vm.prank(relayer);
        vm.expectRevert(NoxExecutor.InsufficientCallGas.selector);
        pool.relay{gas: 330_000}(p, s, address(target), callGas, deadline, data);
        vm.assertFalse(pool.nullifierSpent(s.nullifier), "nothing spent");
        vm.assertEq(relayer.balance, 0, "nothing paid");
        vm.assertTrue(_relay("relayEth"), "with enough gas the same relay goes through");
    }

    function test_RevertWhen_a_relay_proof_is_used_to_withdraw() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        uint256[8] memory p = _proof("relayEth");
        vm.expectRevert(NoxPool.WrongExecution.selector);
        pool.withdraw(p, s);
    }

    function test_RevertWhen_the_root_is_unknown() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        s.root = 12345;
        _relayReverts("relayEth", s, address(target), _data("relayEth"), NoxPool.UnknownRoot.selector);
    }

    function test_RevertWhen_an_input_is_out_of_the_field() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        s.changeCommitment += R; // the same value mod r: must not be accepted as another encoding
        vm.expectRevert(abi.encodeWithSelector(SpendVerifier.InputOutOfField.selector, 2));
        pool.withdraw(p, s);
        s = _inputs("withdraw");
        s.nullifier += R; // a second encoding of the nullifier would allow a double spend
        vm.expectRevert(abi.encodeWithSelector(SpendVerifier.InputOutOfField.selector, 1));
        pool.withdraw(p, s);
    }

    function test_RevertWhen_the_proof_is_malformed_or_wrong() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        p[0] = Q; // coordinate out of the base field
        vm.expectRevert(SpendVerifier.MalformedProof.selector);
        pool.withdraw(p, s);
        p = _proof("withdraw");
        (p[0], p[1]) = (1, 3); // not on the curve
        vm.expectRevert(SpendVerifier.MalformedProof.selector);
        pool.withdraw(p, s);
        p = _proof("withdraw");
        (p[0], p[1], p[6], p[7]) = (p[6], p[7], p[0], p[1]); // valid points, wrong proof
        vm.expectRevert(NoxPool.InvalidProof.selector);
        pool.withdraw(p, s);
        // Another spend's proof for these inputs.
        p = _proof("relayEth");
        vm.expectRevert(NoxPool.InvalidProof.selector);
        pool.withdraw(p, s);
    }

    function test_RevertWhen_a_value_exceeds_128_bits() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        s.publicValue = uint256(type(uint128).max) + 1;
        vm.expectRevert(NoxPool.ValueOverflow.selector);
        pool.withdraw(p, s);
        uint256 huge = uint256(type(uint128).max) + 1;
        vm.deal(DEPOSITOR, huge);
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.ValueOverflow.selector);
        pool.deposit{value: huge}(huge, 1);
    }

    function test_RevertWhen_the_recipient_or_asset_exceeds_160_bits() public withInsertedNotes {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        s.recipient |= 1 << 160;
        vm.expectRevert(NoxPool.WrongRecipient.selector);
        pool.withdraw(p, s);
        s = _inputs("withdraw");
        s.asset = 1 << 160;
        vm.expectRevert(NoxPool.BadAsset.selector);
        pool.withdraw(p, s);
    }

    function test_RevertWhen_the_recipient_refuses_payment() public withInsertedNotes {
        vm.etch(recipient, type(RefusesEth).runtimeCode);
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        uint256[8] memory p = _proof("withdraw");
        vm.expectRevert(NoxPool.PaymentFailed.selector);
        pool.withdraw(p, s);
        vm.assertFalse(pool.nullifierSpent(s.nullifier), "nothing spent");
    }

    function test_fee_on_transfer_tokens_are_credited_what_arrived() public withInsertedNotes {
        FeeToken fee = new FeeToken();
        fee.mint(DEPOSITOR, 1000);
        vm.startPrank(DEPOSITOR);
        fee.approve(address(pool), 1000);
        uint256 index = pool.depositERC20(IERC20(address(fee)), 1000, 7);
        vm.stopPrank();
        vm.assertEq(index, 4, "after the fixture deposits");
        vm.assertEq(fee.balanceOf(address(pool)), 990, "the token kept 1 %");
        // The note is for the 990 that arrived: its commitment, computed in Rust,
        // gives the pool's root.
        string[] memory cmd = new string[](5);
        (cmd[0], cmd[1], cmd[2], cmd[3], cmd[4]) =
        (
            "target/debug/nox-zk",
            "commitment",
            vm.toString(bytes32(uint256(uint160(address(fee))))),
            vm.toString(bytes32(uint256(990))),
            vm.toString(bytes32(uint256(7)))
        );
        _record(uint256(bytes32(vm.ffi(cmd))), 0);
        _flushPending(FLUSHER); // root = Rust root with the note of 990
    }

    function test_RevertWhen_a_deposit_is_zero_or_its_secret_out_of_the_field() public {
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.ZeroValue.selector);
        pool.deposit{value: 0}(0, 1);
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.FieldOverflow.selector);
        pool.deposit{value: 1}(1, R);
    }

    function test_RevertWhen_the_pools_executor_is_called_by_another() public {
        NoxExecutor executor = pool.executor();
        vm.expectRevert(NoxExecutor.OnlyPool.selector);
        executor.execute(address(target), 100_000, _data("relayEth"));
    }

    // ------------------------------------------------------------------------ fuzz

    /// @notice Deposits are queued at consecutive leaves, every wei is accounted for, and
    ///         the root moves only when they are flushed (old roots stay known).
    /// forge-config: default.fuzz.runs = 256
    /// forge-config: default.isolate = false
    function testFuzz_deposits_are_accounted(uint96 a, uint96 b, uint256 secret, uint32 baseFee)
        public
        withInsertedNotes
    {
        cheats.fee(baseFee);
        uint256 bounty = pool.insertionBounty();
        secret = bound(secret, 0, R - 1);
        uint256 x = bound(a, 1, 1 ether);
        uint256 y = bound(b, 1, 1 ether);
        uint256 before = address(pool).balance;
        uint256 rootBefore = pool.currentRoot();
        vm.deal(DEPOSITOR, x + y + 2 * bounty);
        uint256 i = _depositEth(DEPOSITOR, x, secret);
        uint256 j = _depositEth(DEPOSITOR, y, secret);
        vm.assertEq(j, i + 1, "consecutive leaves");
        vm.assertEq(address(pool).balance, before + x + y + 2 * bounty, "every wei accounted");
        vm.assertEq(pool.currentRoot(), rootBefore, "queued, not inserted");
        _flushPending(FLUSHER);
        vm.assertTrue(pool.currentRoot() != rootBefore, "root moved");
        vm.assertTrue(pool.knownRoots(rootBefore), "old root still known");
        vm.assertEq(address(pool).balance, before + x + y, "the bounty went to the flusher");
    }
}
