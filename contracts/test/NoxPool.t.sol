// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {NoxTest} from "./utils/NoxTest.sol";
import {NoxPool, NoxExecutor} from "../src/NoxPool.sol";
import {NoxTestToken} from "../src/NoxTestToken.sol";
import {SpendVerifier} from "../src/generated/SpendVerifier.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

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
        if (bytes4(reason) == ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector) refused++;
    }

    function noop() external {
        NoxPool pool = NoxPool(payable(NoxExecutor(msg.sender).pool()));
        uint256[8] memory proof;
        NoxPool.SpendInputs memory inputs;
        try pool.deposit(1) {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
        try pool.withdraw(proof, inputs) {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
        try pool.relay(proof, inputs, address(this), 0, "") {}
        catch (bytes memory reason) {
            refusedByTheGuard(reason);
        }
        try pool.flush(new uint256[](0)) {}
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

/// @notice Exposes the tree insertion for the root comparison with Rust.
contract NoxPoolHarness is NoxPool {
    function insertLeaf(uint256 leaf) external returns (uint256) {
        return _insert(leaf);
    }
}

/// @notice NoxPool against proofs made by nox-circuits (contracts/test/fixtures/spend.json,
///         `cargo run -p nox-circuits --bin nox-zk -- fixtures`). The token, the pool and
///         the target come from fixed deployers so that their addresses match the fixtures.
contract NoxPoolTest is NoxTest {
    address constant POOL_DEPLOYER = address(0x9001);
    address constant TOKEN_DEPLOYER = address(0x7001);
    address constant TARGET_DEPLOYER = address(0x7A59);
    address constant NOOP_DEPLOYER = address(0x0009);
    address constant DEPOSITOR = address(0xD3);
    uint256 constant R = SpendVerifier.SCALAR_MODULUS;
    uint256 constant Q = SpendVerifier.BASE_MODULUS;

    string json;
    NoxPool pool;
    NoxTestToken token;
    RelayTarget target;
    NoopTarget noop;
    address relayer;
    address recipient;

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

        vm.deal(DEPOSITOR, 10 ether);
        vm.prank(TOKEN_DEPLOYER);
        token.transfer(DEPOSITOR, 10_000e18);
        vm.prank(DEPOSITOR);
        token.approve(address(pool), type(uint256).max);
        for (uint256 i; i < 4; ++i) {
            string memory d = string.concat(".deposits[", vm.toString(i), "]");
            uint256 asset = vm.parseJsonUint(json, string.concat(d, ".asset"));
            uint256 value = vm.parseJsonUint(json, string.concat(d, ".value"));
            uint256 secret = vm.parseJsonUint(json, string.concat(d, ".secret"));
            vm.prank(DEPOSITOR);
            uint256 index = asset == 0
                ? pool.deposit{value: value}(secret)
                : pool.depositERC20(IERC20(address(uint160(asset))), value, secret);
            vm.assertEq(index, i, "leaf index");
            vm.assertEq(pool.currentRoot(), vm.parseJsonUint(json, string.concat(d, ".rootAfter")), "root = Rust root");
        }
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

    /// @dev `from` relays fixture `which` with these inputs, target and data (its
    ///      proof and call gas as made), expecting `revertData` unless it is empty.
    function _relayWith(
        string memory which,
        NoxPool.SpendInputs memory s,
        address from,
        address to,
        bytes memory data,
        bytes memory revertData
    ) internal returns (bool ok) {
        uint256[8] memory p = _proof(which);
        uint256 callGas = _callGas(which);
        vm.prank(from);
        if (revertData.length != 0) vm.expectRevert(revertData);
        ok = pool.relay(p, s, to, callGas, data);
    }

    /// @dev The relayer relays fixture `which` as made.
    function _relay(string memory which) internal returns (bool) {
        return _relayWith(which, _inputs(which), relayer, _to(which), _data(which), "");
    }

    function _relayReverts(string memory which, NoxPool.SpendInputs memory s, address to, bytes memory data, bytes4 err)
        internal
    {
        _relayWith(which, s, relayer, to, data, abi.encodeWithSelector(err));
    }

    // ------------------------------------------------------------------ happy paths

    function test_withdraw_pays_the_recipient_and_queues_the_change() public {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        pool.withdraw(_proof("withdraw"), s);
        vm.assertEq(recipient.balance, 0.5 ether, "recipient paid");
        vm.assertTrue(pool.nullifierSpent(s.nullifier), "nullifier spent");
        vm.assertEq(pool.nullifiers(s.nullifier), s.changeCommitment, "change pending");
        vm.assertEq(address(pool).balance, 3.5 ether, "pool keeps the rest");
    }

    function test_relay_pays_the_relayer_then_calls_as_the_executor() public {
        vm.assertTrue(_relay("relayEth"), "call succeeded");
        vm.assertEq(relayer.balance, 0.01 ether, "relayer paid");
        vm.assertEq(target.lastCaller(), address(pool.executor()), "target sees the executor");
        vm.assertEq(target.lastValue(), 42, "calldata passed");
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        vm.assertEq(pool.nullifiers(s.nullifier), s.changeCommitment, "change pending");
    }

    function test_relay_pays_in_tokens() public {
        _relay("relayToken");
        vm.assertEq(token.balanceOf(relayer), 5e18, "relayer paid in tokens");
        vm.assertEq(token.balanceOf(address(pool)), 995e18, "pool keeps the rest");
    }

    function test_flush_inserts_pending_change_and_roots_match_rust() public {
        pool.withdraw(_proof("withdraw"), _inputs("withdraw"));
        _relay("relayEth");
        _relay("relayToken");
        uint256[] memory spent = new uint256[](2);
        spent[0] = _inputs("withdraw").nullifier;
        spent[1] = _inputs("relayEth").nullifier;
        pool.flush(spent);
        // Nothing is pending for these any more, nor for an unspent nullifier.
        uint256[] memory again = new uint256[](1);
        again[0] = spent[0];
        vm.expectRevert(NoxPool.NothingPending.selector);
        pool.flush(again);
        again[0] = 12345;
        vm.expectRevert(NoxPool.NothingPending.selector);
        pool.flush(again);
        // A batch with stale entries still inserts what is pending.
        uint256[] memory mixed = new uint256[](3);
        (mixed[0], mixed[1], mixed[2]) = (spent[0], _inputs("relayToken").nullifier, 12345);
        pool.flush(mixed);
        again[0] = mixed[1];
        vm.assertEq(pool.nextIndex(), 7, "four deposits and three change notes");
        vm.assertEq(pool.nullifiers(again[0]), 1, "marked inserted");
        vm.assertTrue(pool.nullifierSpent(again[0]), "still spent");
        string[] memory leaves = new string[](7);
        for (uint256 i; i < 4; ++i) {
            leaves[i] = vm.toString(
                bytes32(vm.parseJsonUint(json, string.concat(".deposits[", vm.toString(i), "].commitment")))
            );
        }
        leaves[4] = vm.toString(bytes32(_inputs("withdraw").changeCommitment));
        leaves[5] = vm.toString(bytes32(_inputs("relayEth").changeCommitment));
        leaves[6] = vm.toString(bytes32(_inputs("relayToken").changeCommitment));
        vm.assertEq(pool.currentRoot(), _rustRoot(leaves), "root = Rust root");
    }

    /// @notice The relay's own gas (execution gas, as forge's gas report counts it: no
    ///         intrinsic 21,000 or calldata) in steady state: the queue's storage words
    ///         and the relayer's account already exist, and the call does nothing.
    function test_gas_relay_excluding_the_action_is_under_300k() public {
        _relay("relayEth");
        NoxPool.SpendInputs memory s = _inputs("relayNoop");
        uint256[8] memory p = _proof("relayNoop");
        bytes memory data = _data("relayNoop");
        uint256 callGas = _callGas("relayNoop");
        vm.prank(relayer);
        uint256 g = gasleft();
        bool ok = pool.relay(p, s, address(noop), callGas, data);
        uint256 used = g - gasleft();
        vm.assertTrue(ok, "noop call succeeded");
        log(string.concat("relay gas (steady state, no-op call): ", vm.toString(used)));
        vm.assertLe(used, 300_000, "relay under 300k gas");
    }

    /// @notice A relayed call cannot re-enter the pool.
    function test_relayed_call_cannot_reenter() public {
        vm.etch(address(noop), type(ReentrantNoop).runtimeCode);
        vm.assertTrue(_relay("relayNoop"), "the call ran");
        vm.assertEq(ReentrantNoop(address(noop)).refused(), 4, "all four re-entries refused by the guard");
    }

    /// @notice A failing call does not undo the payment or the spend.
    function test_a_failing_call_keeps_the_payment_and_the_spend() public {
        vm.etch(address(noop), type(FailingNoop).runtimeCode);
        NoxPool.SpendInputs memory s = _inputs("relayNoop");
        vm.assertFalse(_relay("relayNoop"), "the call failed");
        vm.assertEq(relayer.balance, 0.01 ether, "relayer paid anyway");
        vm.assertEq(pool.nullifiers(s.nullifier), s.changeCommitment, "spent, change pending");
    }

    // ---------------------------------------------------------------------- reverts

    function test_revert_spent_nullifier() public {
        _relay("relayEth");
        _relayReverts(
            "relayEth", _inputs("relayEth"), address(target), _data("relayEth"), NoxPool.NullifierSpent.selector
        );
    }

    function test_revert_wrong_relayer() public {
        bytes memory err = abi.encodeWithSelector(NoxPool.WrongRelayer.selector);
        _relayWith("relayEth", _inputs("relayEth"), address(0xBAD), address(target), _data("relayEth"), err);
    }

    function test_revert_altered_calldata() public {
        bytes memory data = _data("relayEth");
        data[data.length - 1] = 0x2b; // 43 instead of 42
        _relayReverts("relayEth", _inputs("relayEth"), address(target), data, NoxPool.WrongExecution.selector);
    }

    function test_revert_altered_target() public {
        _relayReverts(
            "relayEth", _inputs("relayEth"), address(token), _data("relayEth"), NoxPool.WrongExecution.selector
        );
        _relayReverts("relayEth", _inputs("relayEth"), address(0), _data("relayEth"), NoxPool.ZeroTarget.selector);
    }

    /// @notice The call gas is bound too: a relayer cannot promise less.
    function test_revert_altered_call_gas() public {
        uint256[8] memory p = _proof("relayEth");
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        bytes memory data = _data("relayEth");
        vm.prank(relayer);
        vm.expectRevert(NoxPool.WrongExecution.selector);
        pool.relay(p, s, address(target), 30_000, data);
    }

    /// @notice A relayer that sends too little gas for the bound call gas cannot make
    ///         the call fail and keep the fee: the whole relay reverts.
    function test_revert_a_relayer_cannot_starve_the_call() public {
        uint256[8] memory p = _proof("relayEth");
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        bytes memory data = _data("relayEth");
        uint256 callGas = _callGas("relayEth");
        vm.prank(relayer);
        vm.expectRevert(NoxExecutor.InsufficientCallGas.selector);
        pool.relay{gas: 330_000}(p, s, address(target), callGas, data);
        vm.assertFalse(pool.nullifierSpent(s.nullifier), "nothing spent");
        vm.assertEq(relayer.balance, 0, "nothing paid");
        vm.assertTrue(_relay("relayEth"), "with enough gas the same relay goes through");
    }

    function test_revert_a_relay_proof_cannot_withdraw() public {
        vm.expectRevert(NoxPool.WrongExecution.selector);
        pool.withdraw(_proof("relayEth"), _inputs("relayEth"));
    }

    function test_revert_unknown_root() public {
        NoxPool.SpendInputs memory s = _inputs("relayEth");
        s.root = 12345;
        _relayReverts("relayEth", s, address(target), _data("relayEth"), NoxPool.UnknownRoot.selector);
    }

    function test_revert_out_of_field_input() public {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        s.changeCommitment += R; // the same value mod r: must not be accepted as another encoding
        vm.expectRevert(abi.encodeWithSelector(SpendVerifier.InputOutOfField.selector, 2));
        pool.withdraw(_proof("withdraw"), s);
        s = _inputs("withdraw");
        s.nullifier += R; // a second encoding of the nullifier would allow a double spend
        vm.expectRevert(abi.encodeWithSelector(SpendVerifier.InputOutOfField.selector, 1));
        pool.withdraw(_proof("withdraw"), s);
    }

    function test_revert_malformed_proof() public {
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
        vm.expectRevert(NoxPool.InvalidProof.selector);
        pool.withdraw(_proof("relayEth"), s);
    }

    function test_revert_value_overflow() public {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        s.publicValue = uint256(type(uint128).max) + 1;
        vm.expectRevert(NoxPool.ValueOverflow.selector);
        pool.withdraw(_proof("withdraw"), s);
        uint256 huge = uint256(type(uint128).max) + 1;
        vm.deal(DEPOSITOR, huge);
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.ValueOverflow.selector);
        pool.deposit{value: huge}(1);
    }

    function test_revert_recipient_or_asset_beyond_160_bits() public {
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        s.recipient |= 1 << 160;
        vm.expectRevert(NoxPool.WrongRecipient.selector);
        pool.withdraw(_proof("withdraw"), s);
        s = _inputs("withdraw");
        s.asset = 1 << 160;
        vm.expectRevert(NoxPool.BadAsset.selector);
        pool.withdraw(_proof("withdraw"), s);
    }

    function test_revert_a_recipient_that_refuses_payment() public {
        vm.etch(recipient, type(RefusesEth).runtimeCode);
        NoxPool.SpendInputs memory s = _inputs("withdraw");
        vm.expectRevert(NoxPool.PaymentFailed.selector);
        pool.withdraw(_proof("withdraw"), s);
        vm.assertFalse(pool.nullifierSpent(s.nullifier), "nothing spent");
    }

    function test_a_nullifier_listed_twice_is_flushed_once() public {
        pool.withdraw(_proof("withdraw"), _inputs("withdraw"));
        uint256[] memory twice = new uint256[](2);
        (twice[0], twice[1]) = (_inputs("withdraw").nullifier, _inputs("withdraw").nullifier);
        uint256 before = pool.nextIndex();
        pool.flush(twice);
        vm.assertEq(pool.nextIndex(), before + 1, "inserted once");
    }

    function test_fee_on_transfer_tokens_are_credited_what_arrived() public {
        FeeToken fee = new FeeToken();
        fee.mint(DEPOSITOR, 1000);
        vm.startPrank(DEPOSITOR);
        fee.approve(address(pool), 1000);
        uint256 index = pool.depositERC20(IERC20(address(fee)), 1000, 7);
        vm.stopPrank();
        vm.assertEq(fee.balanceOf(address(pool)), 990, "the token kept 1 %");
        string[] memory leaves = new string[](index + 1);
        for (uint256 i; i < index; ++i) {
            leaves[i] = vm.toString(
                bytes32(vm.parseJsonUint(json, string.concat(".deposits[", vm.toString(i), "].commitment")))
            );
        }
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
        leaves[index] = vm.toString(bytes32(vm.ffi(cmd)));
        vm.assertEq(pool.currentRoot(), _rustRoot(leaves), "note of the received amount");
    }

    function test_revert_bad_deposits() public {
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.ZeroValue.selector);
        pool.deposit{value: 0}(1);
        vm.prank(DEPOSITOR);
        vm.expectRevert(NoxPool.FieldOverflow.selector);
        pool.deposit{value: 1}(R);
    }

    function test_executor_obeys_only_the_pool() public {
        NoxExecutor executor = pool.executor();
        vm.expectRevert(NoxExecutor.OnlyPool.selector);
        executor.execute(address(target), 100_000, _data("relayEth"));
    }

    // ------------------------------------------------------------------------ fuzz

    function _rustRoot(string[] memory leaves) internal returns (uint256) {
        string[] memory cmd = new string[](leaves.length + 2);
        cmd[0] = "target/debug/nox-zk";
        cmd[1] = "tree-root";
        for (uint256 i; i < leaves.length; ++i) {
            cmd[i + 2] = leaves[i];
        }
        return uint256(bytes32(vm.ffi(cmd)));
    }

    /// forge-config: default.fuzz.runs = 48
    function testFuzz_tree_root_equals_the_rust_root(uint256 seed, uint8 n) public {
        NoxPoolHarness h = new NoxPoolHarness();
        uint256 count = bound(n, 1, 12);
        string[] memory leaves = new string[](count);
        for (uint256 i; i < count; ++i) {
            uint256 leaf = uint256(keccak256(abi.encode(seed, i))) % R;
            h.insertLeaf(leaf);
            leaves[i] = vm.toString(bytes32(leaf));
        }
        vm.assertEq(h.currentRoot(), _rustRoot(leaves), "Solidity root = Rust root");
        vm.assertTrue(h.knownRoots(h.currentRoot()), "root remembered");
    }

    /// forge-config: default.fuzz.runs = 256
    function testFuzz_deposits_are_accounted(uint96 a, uint96 b, uint256 secret) public {
        secret = bound(secret, 0, R - 1);
        uint256 x = bound(a, 1, 1 ether);
        uint256 y = bound(b, 1, 1 ether);
        uint256 before = address(pool).balance;
        uint256 rootBefore = pool.currentRoot();
        vm.deal(DEPOSITOR, x + y);
        vm.startPrank(DEPOSITOR);
        uint256 i = pool.deposit{value: x}(secret);
        uint256 j = pool.deposit{value: y}(secret);
        vm.stopPrank();
        vm.assertEq(j, i + 1, "consecutive leaves");
        vm.assertEq(address(pool).balance, before + x + y, "every wei accounted");
        vm.assertTrue(pool.currentRoot() != rootBefore, "root moved");
        vm.assertTrue(pool.knownRoots(rootBefore), "old root still known");
    }
}
